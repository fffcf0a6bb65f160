//! Where events come from: schedules (here), provider webhooks and the
//! admin API (later), and the CLI (`botbox call`, in `cli`).

pub mod reports;
pub mod schedule;
