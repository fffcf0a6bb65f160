//! The one table every section adds to, printed at the end and written as
//! JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// A target from the issue and whether this run met it.
pub struct Target {
    pub text: String,
    pub met: bool,
}

/// One figure.
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The figures that go with it: percentiles, ratios, the reference.
    pub detail: String,
    /// What the figure is compared with: the "today", a floor.
    pub reference: Option<String>,
    pub target: Option<Target>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Measurements that could not be taken, and why.
    pub skipped: Vec<String>,
    /// Extra facts worth keeping next to the figures (versions, machine).
    pub facts: Vec<(String, Value)>,
}

impl Report {
    pub fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        detail: impl Into<String>,
    ) {
        self.rows.push(Row {
            section,
            name: name.into(),
            value,
            unit,
            detail: detail.into(),
            reference: None,
            target: None,
        });
    }

    /// Attaches what the row added last is compared with.
    pub fn reference(&mut self, text: impl Into<String>) {
        if let Some(row) = self.rows.last_mut() {
            row.reference = Some(text.into());
        }
    }

    /// Attaches a target to the row added last.
    pub fn target(&mut self, text: impl Into<String>, met: bool) {
        if let Some(row) = self.rows.last_mut() {
            row.target = Some(Target {
                text: text.into(),
                met,
            });
        }
    }

    pub fn skip(&mut self, why: impl Into<String>) {
        let why = why.into();
        eprintln!("skipped: {why}");
        self.skipped.push(why);
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| section | measurement | value | detail | reference | target | met |\n|---|---|---:|---|---|---|---|"
        );
        for row in &self.rows {
            let (target, met) = match &row.target {
                Some(t) => (t.text.as_str(), if t.met { "yes" } else { "**no**" }),
                None => ("", ""),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} | {target} | {met} |",
                row.section,
                row.name,
                format_value(row.value),
                row.unit,
                row.detail,
                row.reference.as_deref().unwrap_or("")
            );
        }
        for why in &self.skipped {
            let _ = writeln!(out, "\nnot measured: {why}");
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "facts": self.facts.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "rows": self.rows.iter().map(|r| json!({
                "section": r.section,
                "name": r.name,
                "value": r.value,
                "unit": r.unit,
                "detail": r.detail,
                "reference": r.reference,
                "target": r.target.as_ref().map(|t| t.text.clone()),
                "met": r.target.as_ref().map(|t| t.met),
            })).collect::<Vec<_>>(),
            "skipped": self.skipped,
        })
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&self.json()).unwrap_or_default();
        std::fs::write(path, text)
    }
}

/// Three significant figures, without a forest of decimals.
pub fn format_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
