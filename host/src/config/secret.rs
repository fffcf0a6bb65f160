//! Secret references and the type that holds a resolved secret.
//!
//! A config names where a secret lives (`{ env = "…" }` or `{ file = "…" }`),
//! never the secret itself, so a `botbox.toml` can be shared and committed.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// An environment variable of the host process.
    Env {
        /// The variable's name.
        env: String,
    },
    /// A file whose contents (trailing newline trimmed) are the secret.
    File {
        /// The path, relative to the config file's folder.
        file: PathBuf,
    },
}

/// Why a secret reference could not be resolved. Never contains the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The variable is not set.
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    /// The variable is set but empty.
    #[error("environment variable `{0}` is empty")]
    EnvEmpty(String),
    /// The file could not be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    FileUnreadable {
        /// The path as resolved.
        path: String,
        /// The I/O error's kind (never the file's contents).
        reason: String,
    },
    /// The file is empty (or only a newline).
    #[error("secret file `{0}` is empty")]
    FileEmpty(String),
}

impl SecretRef {
    /// Reads the secret. Relative file paths are taken from `base_dir`, the
    /// folder of the config file, so a config means the same from any cwd.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env { env } => match std::env::var(env) {
                Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty(env.clone())),
                Ok(value) => Ok(Secret::new(value)),
                Err(_) => Err(SecretError::EnvMissing(env.clone())),
            },
            SecretRef::File { file } => {
                let path = base_dir.join(file);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| SecretError::FileUnreadable {
                        path: path.display().to_string(),
                        reason: e.kind().to_string(),
                    })?;
                let trimmed = text.trim_end_matches(['\n', '\r']);
                if trimmed.is_empty() {
                    return Err(SecretError::FileEmpty(path.display().to_string()));
                }
                Ok(Secret::new(trimmed.to_owned()))
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { env } => write!(f, "env:{env}"),
            SecretRef::File { file } => write!(f, "file:{}", file.display()),
        }
    }
}

/// A credential. `Debug` and `Display` print `[redacted]`; the only way to
/// the value is [`Secret::expose`], which signing code calls at the moment it
/// needs the bytes.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a credential read from its source.
    pub fn new(value: String) -> Self {
        Secret(SecretString::from(value))
    }

    /// The value, for the code that signs or sends with it; never for a
    /// log, an error or a page.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-very-distinctive".into());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2-very-distinctive");
    }

    #[test]
    fn file_secret_is_trimmed_and_relative_to_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "abc\n").unwrap();
        let r = SecretRef::File {
            file: "s.txt".into(),
        };
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "abc");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let r = SecretRef::Env {
            env: "BOTBOX_TEST_SURELY_UNSET_VAR".into(),
        };
        let err = r.resolve(Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("BOTBOX_TEST_SURELY_UNSET_VAR"));
    }
}
