//! `botbox test`: runs a plugin's behaviour cases (`bot.test.toml`) and
//! prints what differed; exit code 0 when every case passed, 1 when one
//! failed, 2 when a file could not be run.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::ExitCode;
use crate::app::bot_test::report::{CaseOutcome, DiffLine, FileReport, failure_text};
use crate::app::bot_test::{self, DEFAULT_FILE, Options};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (default: bot.test.toml in the current folder).
    pub files: Vec<PathBuf>,
    /// The component to test, instead of the file's `component`.
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// Look for each file's component by its file name in this folder.
    #[arg(long, value_name = "DIR")]
    pub component_dir: Option<PathBuf>,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Also write the results as JUnit XML to this file, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Where the compile cache lives (shared with `botbox call`); each
    /// case's kv and outbox are fresh and temporary.
    #[arg(long, default_value = ".botbox")]
    pub storage: PathBuf,
}

/// Colours for the diff, only on a terminal.
struct Paint {
    on: bool,
}

impl Paint {
    fn line(&self, line: &DiffLine) -> String {
        let text = line.marked();
        if !self.on {
            return text;
        }
        let colour = match line {
            DiffLine::Expected(_) => "31",
            DiffLine::Actual(_) => "32",
            DiffLine::Note(_) => "33",
            DiffLine::Same(_) => return text,
        };
        format!("\x1b[{colour}m{text}\x1b[0m")
    }

    fn word(&self, word: &str, colour: &str) -> String {
        if self.on {
            format!("\x1b[{colour}m{word}\x1b[0m")
        } else {
            word.to_owned()
        }
    }
}

fn print_report(report: &FileReport, paint: &Paint) {
    println!("{} ({})", report.file.display(), report.component.display());
    for case in &report.cases {
        let ms = case.elapsed.as_secs_f64() * 1000.0;
        match &case.outcome {
            CaseOutcome::Passed => {
                println!("  {}  {} ({ms:.0} ms)", paint.word("ok  ", "32"), case.name)
            }
            CaseOutcome::Failed(diff) => {
                println!("  {}  {} ({ms:.0} ms)", paint.word("FAIL", "31"), case.name);
                println!("      --- expected");
                println!("      +++ actual");
                for line in diff {
                    println!("      {}", paint.line(line));
                }
            }
            outcome @ CaseOutcome::Error(_) => {
                println!("  {}  {} ({ms:.0} ms)", paint.word("ERR ", "31"), case.name);
                for line in failure_text(outcome).lines() {
                    println!("      {line}");
                }
            }
        }
    }
}

pub async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let files = if args.files.is_empty() {
        vec![PathBuf::from(DEFAULT_FILE)]
    } else {
        args.files.clone()
    };
    let options = Options {
        component: args.component.clone(),
        component_dir: args.component_dir.clone(),
        cache_dir: args.storage.join("cache"),
        filter: args.filter.clone(),
    };
    let paint = Paint {
        on: std::io::stdout().is_terminal(),
    };
    let mut reports = Vec::new();
    let mut broken = false;
    for file in &files {
        match bot_test::run_file(file, &options).await {
            Ok(report) => {
                print_report(&report, &paint);
                reports.push(report);
            }
            Err(e) => {
                eprintln!("error: {e}");
                broken = true;
            }
        }
    }
    if let Some(path) = &args.junit {
        let out = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot write --junit {}: {e}", path.display()))?;
        bot_test::report::junit(&reports, std::io::BufWriter::new(out))
            .map_err(|e| anyhow::anyhow!("cannot write --junit {}: {e}", path.display()))?;
    }
    let cases: usize = reports.iter().map(|r| r.cases.len()).sum();
    let failed: usize = reports.iter().map(FileReport::failures).sum();
    println!(
        "{} case(s), {} passed, {failed} failed",
        cases,
        cases - failed
    );
    Ok(if broken {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}
