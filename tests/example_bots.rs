//! filled in below
mod support;
