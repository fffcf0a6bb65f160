//! What `botbox test` found: per case, passed, failed with the diff of
//! expected against actual, or could not run; and the same as JUnit XML
//! for CI.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesCData, BytesDecl, BytesEnd, BytesStart, Event};

/// One line of a case's diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    /// Expected and happened.
    Same(String),
    /// Expected, and did not happen (as written in the test file).
    Expected(String),
    /// Happened, and was not expected.
    Actual(String),
    /// Something the run noticed (an undelivered message, lost lines).
    Note(String),
}

impl DiffLine {
    /// Whether this line is no difference.
    pub fn matches(&self) -> bool {
        matches!(self, DiffLine::Same(_) | DiffLine::Note(_))
    }

    /// The line with its `-`/`+`/` `/`#` marker, as the report prints it.
    pub fn marked(&self) -> String {
        match self {
            DiffLine::Same(t) => format!("  {t}"),
            DiffLine::Expected(t) => format!("- {t}"),
            DiffLine::Actual(t) => format!("+ {t}"),
            DiffLine::Note(t) => format!("# {t}"),
        }
    }
}

/// How one case went.
#[derive(Debug, Clone)]
pub enum CaseOutcome {
    /// Everything expected happened.
    Passed,
    /// The diff of expected (`-`) against actual (`+`).
    Failed(Vec<DiffLine>),
    /// The case could not run (its config, its plugin's load); the text says why.
    Error(String),
}

/// One case's report.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// How long it took.
    pub elapsed: Duration,
    /// How it went.
    pub outcome: CaseOutcome,
}

/// One file's report.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The test file.
    pub file: PathBuf,
    /// The component it tested.
    pub component: PathBuf,
    /// How long the file took, the plugin's first load included.
    pub elapsed: Duration,
    /// Each case run.
    pub cases: Vec<CaseReport>,
}

impl FileReport {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.cases
            .iter()
            .all(|c| matches!(c.outcome, CaseOutcome::Passed))
    }

    /// Cases that failed or could not run.
    pub fn failures(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| !matches!(c.outcome, CaseOutcome::Passed))
            .count()
    }
}

/// The text shown for a failed or broken case: the diff (only the lines
/// that differ and their neighbours would hide the order, so all of it).
pub fn failure_text(outcome: &CaseOutcome) -> String {
    match outcome {
        CaseOutcome::Passed => String::new(),
        CaseOutcome::Failed(diff) => {
            let mut text = String::from("--- expected\n+++ actual\n");
            for line in diff {
                text.push_str(&line.marked());
                text.push('\n');
            }
            text
        }
        CaseOutcome::Error(e) => format!("{e}\n"),
    }
}

/// The first difference of a failed case, for a one-line summary.
pub fn failure_summary(outcome: &CaseOutcome) -> String {
    match outcome {
        CaseOutcome::Passed => String::new(),
        CaseOutcome::Failed(diff) => diff
            .iter()
            .find(|d| !d.matches())
            .map(DiffLine::marked)
            .unwrap_or_default(),
        CaseOutcome::Error(e) => e.clone(),
    }
}

/// The reports as JUnit XML: one `testsuite` per file, one `testcase` per
/// case, a `failure` (with the diff) per failed case and an `error` per
/// case that could not run.
pub fn junit(reports: &[FileReport], out: impl Write) -> std::io::Result<()> {
    let mut w = Writer::new_with_indent(out, b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let tests: usize = reports.iter().map(|r| r.cases.len()).sum();
    let failures = count(reports, |o| matches!(o, CaseOutcome::Failed(_)));
    let errors = count(reports, |o| matches!(o, CaseOutcome::Error(_)));
    let total: Duration = reports.iter().map(|r| r.elapsed).sum();
    let mut suites = BytesStart::new("testsuites");
    suites.push_attribute(("name", "botbox test"));
    suites.push_attribute(("tests", tests.to_string().as_str()));
    suites.push_attribute(("failures", failures.to_string().as_str()));
    suites.push_attribute(("errors", errors.to_string().as_str()));
    suites.push_attribute(("time", secs(total).as_str()));
    w.write_event(Event::Start(suites))?;
    for report in reports {
        let name = report.file.display().to_string();
        let mut suite = BytesStart::new("testsuite");
        suite.push_attribute(("name", name.as_str()));
        suite.push_attribute(("tests", report.cases.len().to_string().as_str()));
        let f = count(std::slice::from_ref(report), |o| {
            matches!(o, CaseOutcome::Failed(_))
        });
        let e = count(std::slice::from_ref(report), |o| {
            matches!(o, CaseOutcome::Error(_))
        });
        suite.push_attribute(("failures", f.to_string().as_str()));
        suite.push_attribute(("errors", e.to_string().as_str()));
        suite.push_attribute(("time", secs(report.elapsed).as_str()));
        w.write_event(Event::Start(suite))?;
        for case in &report.cases {
            let mut tc = BytesStart::new("testcase");
            tc.push_attribute(("name", case.name.as_str()));
            tc.push_attribute(("classname", name.as_str()));
            tc.push_attribute(("time", secs(case.elapsed).as_str()));
            let element = match &case.outcome {
                CaseOutcome::Passed => {
                    w.write_event(Event::Empty(tc))?;
                    continue;
                }
                CaseOutcome::Failed(_) => "failure",
                CaseOutcome::Error(_) => "error",
            };
            w.write_event(Event::Start(tc))?;
            let mut el = BytesStart::new(element);
            let summary = failure_summary(&case.outcome);
            el.push_attribute(("message", summary.as_str()));
            el.push_attribute((
                "type",
                if element == "failure" {
                    "mismatch"
                } else {
                    "error"
                },
            ));
            w.write_event(Event::Start(el))?;
            // CDATA cannot hold `]]>`; split it across two sections.
            let text = failure_text(&case.outcome);
            for (i, piece) in text.split("]]>").enumerate() {
                if i > 0 {
                    w.write_event(Event::CData(BytesCData::new("]]")))?;
                    w.write_event(Event::CData(BytesCData::new(">")))?;
                }
                w.write_event(Event::CData(BytesCData::new(piece)))?;
            }
            w.write_event(Event::End(BytesEnd::new(element)))?;
            w.write_event(Event::End(BytesEnd::new("testcase")))?;
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    Ok(())
}

fn count(reports: &[FileReport], pick: impl Fn(&CaseOutcome) -> bool) -> usize {
    reports
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|c| pick(&c.outcome))
        .count()
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> FileReport {
        FileReport {
            file: "bot.test.toml".into(),
            component: "bot.wasm".into(),
            elapsed: Duration::from_millis(1500),
            cases: vec![
                CaseReport {
                    name: "greets".into(),
                    elapsed: Duration::from_millis(10),
                    outcome: CaseOutcome::Passed,
                },
                CaseReport {
                    name: "counts <twice> & more".into(),
                    elapsed: Duration::from_millis(20),
                    outcome: CaseOutcome::Failed(vec![
                        DiffLine::Same("event 1: result ok".into()),
                        DiffLine::Expected("broadcast 1: \"a]]>b\"".into()),
                        DiffLine::Actual("broadcast 1: \"c\"".into()),
                    ]),
                },
            ],
        }
    }

    #[test]
    fn junit_has_a_failure_element_with_the_diff_and_escapes_names() {
        let mut out = Vec::new();
        junit(&[report()], &mut out).unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(
            xml.contains(r#"<testsuites name="botbox test" tests="2" failures="1" errors="0""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="greets" classname="bot.test.toml" time="0.010"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"name="counts &lt;twice&gt; &amp; more""#),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<failure message="- broadcast 1: &quot;a]]&gt;b&quot;" type="mismatch">"#
            ),
            "{xml}"
        );
        assert!(xml.contains("+ broadcast 1: \"c\""), "{xml}");
        // The `]]>` inside the diff is split, so the CDATA stays well formed.
        let mut reader = quick_xml::Reader::from_str(&xml);
        let mut text = String::new();
        loop {
            match reader.read_event().unwrap() {
                quick_xml::events::Event::Eof => break,
                quick_xml::events::Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
                _ => {}
            }
        }
        assert!(text.contains("- broadcast 1: \"a]]>b\""), "{text}");
    }

    #[test]
    fn the_failure_text_marks_expected_and_actual() {
        let text = failure_text(&report().cases[1].outcome);
        assert_eq!(
            text,
            "--- expected\n+++ actual\n  event 1: result ok\n- broadcast 1: \"a]]>b\"\n+ broadcast 1: \"c\"\n"
        );
    }
}
