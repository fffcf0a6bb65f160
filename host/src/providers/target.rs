//! `channels.NAME.target`: which conversations a channel posts into, in one
//! shape for every provider.
//!
//! ```toml
//! target = { meetings = "all" }              # BigBlueButton: every running meeting
//! target = { meetings = ["room-1", "room-2"] } # BigBlueButton: these meetings
//! target = { groups = "all" }                # Tencent: every audio-video group (the default)
//! target = { users = "all" }                 # Easemob: every user ("online": those online)
//! target = { chatrooms = "all" }             # Easemob: every active chat room
//! target = { dialogs = ["chat13", 256] }     # Bitrix24: these chats and private dialogs
//! ```
//!
//! One key, the kind of conversation; its value is `"all"` (or a narrower
//! word the provider's broadcast knows, such as Easemob's `"online"`), or a
//! list of ids. Each provider lists the forms it takes ([`Forms`]); parsing
//! and every message about a target are here, so they read the same for
//! every provider. The forms older configs used still read: BigBlueButton's
//! `"all-running"` and Easemob's strings (`"all-users"`, `"online-users"`,
//! `"chatrooms"`).

use crate::sanitize;

/// What a channel's target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every conversation of `kind` the provider's broadcast reaches, as
    /// far as `scope` (`"all"`, or a narrower word such as `"online"`).
    Every {
        /// The kind of conversation, such as `"meetings"`.
        kind: &'static str,
        /// `"all"` or the provider's narrower word.
        scope: &'static str,
    },
    /// These conversations of `kind`, in the order written.
    Listed {
        /// The kind of conversation, such as `"dialogs"`.
        kind: &'static str,
        /// Their ids.
        ids: Vec<String>,
    },
}

/// One form of target a provider takes.
pub enum Form {
    /// `{ kind = "scope" }`: every conversation of a kind the provider's
    /// broadcast reaches.
    Every {
        /// The kind of conversation.
        kind: &'static str,
        /// The word: `"all"`, or a narrower one.
        scope: &'static str,
        /// Other words read the same (older spellings).
        aliases: &'static [&'static str],
        /// What it reaches, for messages and the README.
        reaches: &'static str,
    },
    /// `{ kind = ["id", …] }`: these conversations.
    Listed {
        /// The kind of conversation.
        kind: &'static str,
        /// The inside of the example list (`"meetingID", …`).
        example: &'static str,
        /// What the ids are, in the plural (`meeting IDs`).
        ids: &'static str,
        /// Whether integers are taken as ids (Bitrix24 user ids).
        integers: bool,
        /// Why an id is not one (`None`: it is).
        check: fn(&str) -> Option<String>,
    },
}

impl Form {
    fn kind(&self) -> &'static str {
        match self {
            Form::Every { kind, .. } | Form::Listed { kind, .. } => kind,
        }
    }

    /// The form as an operator writes it.
    fn example(&self) -> String {
        match self {
            Form::Every {
                kind,
                scope,
                reaches,
                ..
            } => format!("target = {{ {kind} = \"{scope}\" }} ({reaches})"),
            Form::Listed { kind, example, .. } => {
                format!("target = {{ {kind} = [{example}] }}")
            }
        }
    }
}

/// Every form of target one provider takes.
pub struct Forms {
    /// The provider, for messages (`"a bigbluebutton channel"`).
    pub provider: &'static str,
    /// The forms.
    pub forms: &'static [Form],
    /// The form a channel without `target` gets, when there is one (an
    /// index into `forms`, an [`Form::Every`]); else `target` is required.
    pub default: Option<usize>,
    /// Older configs' plain-string targets and the form each means (an
    /// index into `forms`, an [`Form::Every`]).
    pub legacy: &'static [(&'static str, usize)],
}

impl Forms {
    /// The forms, as a sentence to write one of.
    fn choices(&self) -> String {
        let examples: Vec<String> = self.forms.iter().map(Form::example).collect();
        match examples.split_last() {
            Some((last, [])) => format!("write {last}"),
            Some((last, rest)) => format!("write {} or {last}", rest.join(", ")),
            None => "remove it".into(),
        }
    }

    fn every(&self, index: usize) -> Target {
        match &self.forms[index] {
            Form::Every { kind, scope, .. } => Target::Every { kind, scope },
            Form::Listed { kind, .. } => Target::Listed {
                kind,
                ids: Vec::new(),
            },
        }
    }

    /// Reads a channel's `target` (`None`: the key is not there). The
    /// error is the message for `channels.NAME.target`: what is wrong, and
    /// the forms to write instead.
    pub fn parse(&self, value: Option<&toml::Value>) -> Result<Target, String> {
        let table = match value {
            None => {
                return match self.default {
                    Some(i) => Ok(self.every(i)),
                    None => Err(format!("is missing: {}", self.choices())),
                };
            }
            Some(toml::Value::String(s)) => {
                return match self.legacy.iter().find(|(word, _)| word == s) {
                    Some((_, i)) => Ok(self.every(*i)),
                    None => Err(format!("must be a table; {}", self.choices())),
                };
            }
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(format!("must be a table; {}", self.choices())),
        };
        let mut keys = table.keys();
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Err(format!(
                "must name one kind of conversation; {}",
                self.choices()
            ));
        };
        let forms: Vec<&Form> = self.forms.iter().filter(|f| f.kind() == key).collect();
        if forms.is_empty() {
            return Err(format!(
                "names `{}`, which {} does not post to; {}",
                sanitize::for_log(key, 40),
                self.provider,
                self.choices()
            ));
        }
        let value = &table[key.as_str()];
        for form in &forms {
            match (form, value) {
                (
                    Form::Every {
                        kind,
                        scope,
                        aliases,
                        ..
                    },
                    toml::Value::String(s),
                ) if s == scope || aliases.contains(&s.as_str()) => {
                    return Ok(Target::Every { kind, scope });
                }
                (
                    Form::Listed {
                        kind,
                        integers,
                        check,
                        ..
                    },
                    toml::Value::Array(items),
                ) => return listed(kind, items, *integers, *check),
                _ => {}
            }
        }
        Err(format!(
            "`{key}` takes {}; {}",
            forms
                .iter()
                .map(|f| match f {
                    Form::Every { scope, .. } => format!("\"{scope}\""),
                    Form::Listed { ids, .. } => format!("a list of {ids}"),
                })
                .collect::<Vec<_>>()
                .join(" or "),
            self.choices()
        ))
    }
}

/// A list of ids: each one checked, none twice, at least one.
fn listed(
    kind: &'static str,
    items: &[toml::Value],
    integers: bool,
    check: fn(&str) -> Option<String>,
) -> Result<Target, String> {
    if items.is_empty() {
        return Err(format!("lists no {kind}"));
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) if integers => n.to_string(),
            _ if integers => return Err(format!("{kind} must be strings or integers")),
            _ => return Err(format!("{kind} must be strings")),
        };
        if let Some(why) = check(&id) {
            return Err(format!("`{}` {why}", sanitize::for_log(&id, 80)));
        }
        if ids.contains(&id) {
            return Err(format!("lists `{}` twice", sanitize::for_log(&id, 80)));
        }
        ids.push(id);
    }
    Ok(Target::Listed { kind, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_chars(id: &str) -> Option<String> {
        (id.len() < 2).then(|| "is shorter than 2 characters".into())
    }

    const FORMS: Forms = Forms {
        provider: "a test channel",
        forms: &[
            Form::Every {
                kind: "rooms",
                scope: "all",
                aliases: &["all-open"],
                reaches: "every open room",
            },
            Form::Every {
                kind: "rooms",
                scope: "online",
                aliases: &[],
                reaches: "rooms with someone in them",
            },
            Form::Listed {
                kind: "rooms",
                example: "\"roomID\", …",
                ids: "room IDs",
                integers: false,
                check: two_chars,
            },
        ],
        default: None,
        legacy: &[("every-room", 0)],
    };

    fn parse(text: &str) -> Result<Target, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        FORMS.parse(table.get("target"))
    }

    const CHOICES: &str = "write target = { rooms = \"all\" } (every open room), target = { rooms = \"online\" } (rooms with someone in them) or target = { rooms = [\"roomID\", …] }";

    #[test]
    fn every_form_alias_and_legacy_string_reads() {
        let every = Target::Every {
            kind: "rooms",
            scope: "all",
        };
        assert_eq!(parse(r#"target = { rooms = "all" }"#), Ok(every.clone()));
        assert_eq!(
            parse(r#"target = { rooms = "all-open" }"#),
            Ok(every.clone())
        );
        assert_eq!(parse(r#"target = "every-room""#), Ok(every));
        assert_eq!(
            parse(r#"target = { rooms = "online" }"#),
            Ok(Target::Every {
                kind: "rooms",
                scope: "online"
            })
        );
        assert_eq!(
            parse(r#"target = { rooms = ["r1", "r2"] }"#),
            Ok(Target::Listed {
                kind: "rooms",
                ids: vec!["r1".into(), "r2".into()]
            })
        );
    }

    #[test]
    fn every_mistake_says_what_to_write() {
        for (text, message) in [
            ("", format!("is missing: {CHOICES}")),
            (r#"target = "rooms""#, format!("must be a table; {CHOICES}")),
            ("target = 3", format!("must be a table; {CHOICES}")),
            (
                r#"target = { rooms = "all", users = "all" }"#,
                format!("must name one kind of conversation; {CHOICES}"),
            ),
            (
                "target = {}",
                format!("must name one kind of conversation; {CHOICES}"),
            ),
            (
                r#"target = { users = "all" }"#,
                format!("names `users`, which a test channel does not post to; {CHOICES}"),
            ),
            (
                r#"target = { rooms = "some" }"#,
                format!("`rooms` takes \"all\" or \"online\" or a list of room IDs; {CHOICES}"),
            ),
            (r#"target = { rooms = [] }"#, "lists no rooms".to_string()),
            (
                r#"target = { rooms = ["a"] }"#,
                "`a` is shorter than 2 characters".to_string(),
            ),
            (
                r#"target = { rooms = [12] }"#,
                "rooms must be strings".to_string(),
            ),
            (
                r#"target = { rooms = ["r1", "r1"] }"#,
                "lists `r1` twice".to_string(),
            ),
            (
                "target = { rooms = [\"\\u001b\"] }",
                "`\\u{1b}` is shorter than 2 characters".to_string(),
            ),
        ] {
            assert_eq!(parse(text), Err(message), "{text}");
        }
    }

    #[test]
    fn a_default_applies_when_target_is_left_out() {
        let forms = Forms {
            default: Some(1),
            ..FORMS
        };
        assert_eq!(
            forms.parse(None),
            Ok(Target::Every {
                kind: "rooms",
                scope: "online"
            })
        );
    }
}
