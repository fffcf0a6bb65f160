//! Printing what a plugin does, as `botbox call` and `botbox dev` show it:
//! one line per log line, broadcast and delivery outcome.

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::capabilities::log::{LogRecord, level_name};
use crate::delivery::{Accepted, Finished};
use crate::providers::console;

fn print_log(r: LogRecord) {
    println!(
        "log   {:<5} {}: {}",
        level_name(r.level),
        r.plugin,
        r.message
    );
}

fn print_accepted(a: Accepted) {
    println!(
        "send  {}  (receipt {})",
        console::render(&a.channel, &a.message),
        a.receipt.id
    );
}

fn print_finished(f: Finished) {
    let mut text = f.state.as_str().to_string();
    if !f.provider_ids.is_empty() {
        text.push_str(&format!(" ({})", f.provider_ids.join(", ")));
    }
    if let Some(detail) = &f.detail {
        text.push_str(&format!(": {detail}"));
    }
    println!("deliv {} #{}: {text}", f.receipt_id, f.channel);
}

/// Prints in the order things happen until stopped, then drains what is left.
pub struct Printer {
    done: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Printer {
    pub fn start(app: &App) -> Printer {
        let mut logs = app.runtime.services().log_observers.subscribe();
        let mut accepted = app.delivery.observers().accepted.subscribe();
        let mut finished = app.delivery.observers().finished.subscribe();
        let (done, mut done_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    Ok(r) = logs.recv() => print_log(r),
                    Ok(a) = accepted.recv() => print_accepted(a),
                    Ok(f) = finished.recv() => print_finished(f),
                    _ = &mut done_rx => break,
                }
            }
            while let Ok(r) = logs.try_recv() {
                print_log(r);
            }
            while let Ok(a) = accepted.try_recv() {
                print_accepted(a);
            }
            while let Ok(f) = finished.try_recv() {
                print_finished(f);
            }
        });
        Printer { done, task }
    }

    pub async fn stop(self) {
        let _ = self.done.send(());
        let _ = self.task.await;
    }
}
