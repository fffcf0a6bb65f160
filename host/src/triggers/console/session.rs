//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie
//! (never the admin token), a CSRF token bound to each session, idle and
//! absolute expiry, and a cap on how many are open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::providers::inbound::same;

/// The cookie's name.
pub const COOKIE: &str = "botbox_console";
/// A session unused this long is over.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session is over this long after its login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions open at once; a login past it ends the least recently used.
pub const MAX_SESSIONS: usize = 32;

/// One logged-in browser.
struct Session {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// What a request learns from its valid session.
#[derive(Debug, Clone)]
pub struct Current {
    /// The session id (the cookie's value).
    pub id: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

/// The open sessions, by id.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the OS-seeded generator, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// Opens a session; its id and CSRF token.
    pub fn open(&self) -> Current {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| alive(s, now));
        while open.len() >= MAX_SESSIONS {
            let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            open.remove(&oldest);
        }
        let current = Current {
            id: random_token(),
            csrf: random_token(),
        };
        open.insert(
            current.id.clone(),
            Session {
                csrf: current.csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        current
    }

    /// The session a cookie value names, if it is open; marks it used.
    pub fn find(&self, id: &str) -> Option<Current> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let session = open.get_mut(id)?;
        if !alive(session, now) {
            open.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(Current {
            id: id.to_string(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.created) < LIFETIME
}

impl Current {
    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(g.as_bytes(), self.csrf.as_bytes()))
    }
}

/// The session cookie's value in a `Cookie` header, if there is one.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that gives a browser its session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_carries_its_own_csrf_token() {
        let sessions = Sessions::default();
        let a = sessions.open();
        let b = sessions.open();
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, a.id);
        let found = sessions.find(&a.id).expect("open");
        assert!(found.csrf_matches(Some(&a.csrf)));
        assert!(!found.csrf_matches(Some(&b.csrf)));
        assert!(!found.csrf_matches(None));
        assert!(sessions.find("not-a-session").is_none());
        sessions.close(&a.id);
        assert!(sessions.find(&a.id).is_none());
        assert!(sessions.find(&b.id).is_some());
    }

    #[test]
    fn logins_past_the_cap_end_the_least_recently_used_session() {
        let sessions = Sessions::default();
        let first = sessions.open();
        for _ in 1..MAX_SESSIONS {
            sessions.open();
        }
        sessions.find(&first.id).expect("still open");
        let second_oldest = sessions.open();
        assert!(sessions.find(&first.id).is_some(), "used most recently");
        assert!(sessions.find(&second_oldest.id).is_some());
        assert_eq!(
            sessions.open.lock().unwrap().len(),
            MAX_SESSIONS,
            "never more than the cap"
        );
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_http_only_strict() {
        assert_eq!(cookie_value("a=1; botbox_console=abc; b=2"), Some("abc"));
        assert_eq!(cookie_value("botbox_consolex=abc"), None);
        let set = set_cookie("abc");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
            assert!(set.contains(part), "{set}");
        }
    }
}
