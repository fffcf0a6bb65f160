//! {{name}}: a botbox plugin. It greets people who say `!hello` in chat,
//! answering in their conversation, and counts greetings in kv.
//!
//! Try it: `./build.sh`, then
//! `botbox call {{name}}.wasm --event '{"name": "hello", "payload": "Ada"}'`.

use botbox_sdk::{Bot, ChatMessage, Event, EventKind, Manifest, Message, kv, settings};

struct Plugin;

/// The greeting for `name`, from the `greeting` setting, with the count.
pub fn greeting(template: &str, name: &str, count: u64) -> String {
    format!("{} (greeting #{count})", template.replace("{name}", name))
}

/// Counts one more greeting in kv and returns the new total.
fn count_greeting() -> Result<u64, String> {
    let count = kv::get_string("greeted")?
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    kv::set_string("greeted", &count.to_string())?;
    Ok(count)
}

fn greet(name: &str, channel: &str, reply_to: Option<&str>) -> Result<(), String> {
    let count = count_greeting()?;
    let text = greeting(&settings::get_or("greeting", "Hello, {name}!"), name, count);
    let mut msg = Message::text(channel, text);
    if let Some(sender) = settings::get("sender") {
        msg = msg.sender(sender);
    }
    if let Some(conversation) = reply_to {
        msg = msg.reply_to(conversation);
    }
    msg.send()?;
    Ok(())
}

fn on_chat(msg: &ChatMessage) -> Result<(), String> {
    if msg.text.trim() == "!hello" {
        greet(msg.author(), &msg.channel, Some(&msg.conversation))?;
    }
    Ok(())
}

impl Bot for Plugin {
    fn describe() -> Manifest {
        Manifest::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .channel("lobby")
            .event(EventKind::ChatMessage)
            .event(EventKind::Custom)
    }

    fn handle(event: Event) -> Result<(), String> {
        match event {
            Event::ChatMessage(msg) => on_chat(&msg),
            // `botbox call … --event '{"name": "hello", "payload": "Ada"}'`
            Event::Custom(custom) if custom.name == "hello" => {
                let name = custom.payload.trim();
                greet(if name.is_empty() { "everyone" } else { name }, "lobby", None)
            }
            Event::Custom(custom) => Err(format!(
                "unknown event `{}`; this bot knows `hello`",
                custom.name
            )),
            _ => Ok(()),
        }
    }
}

botbox_sdk::export_bot!(Plugin);

#[cfg(test)]
mod tests {
    #[test]
    fn greeting_fills_in_the_name_and_count() {
        assert_eq!(
            super::greeting("Hi {name}!", "Ada", 3),
            "Hi Ada! (greeting #3)"
        );
    }
}
