//! `cargo xtask test`: everything CI checks, in order, stopping at the first
//! failure and naming it.

use std::process::Command;

use anyhow::Result;

use crate::guests::{self, Lang};
use crate::{fuzz, paths, plugins, setup, step};

pub fn run() -> Result<()> {
    let root = paths::root();
    let guest_ws = paths::plugins_workspace();
    let sdk = paths::rust_sdk();
    let guest_target = paths::guest_target_dir();

    // The components first: the host's integration tests load them (and
    // the template tests reuse the JS and Python tools this installs).
    let toolchain = setup::ensure()?;
    plugins::build_all(&toolchain)?;
    // tests/scale_out.rs starts its own server from these binaries.
    setup::ensure_postgres()?;
    // tests/oci.rs starts its own registry from this binary.
    setup::ensure_registry()?;
    // tests/console.rs drives Chromium through chromedriver.
    setup::ensure_browser()?;

    let host = |args: &[&str]| {
        let mut cmd = step::cargo();
        cmd.current_dir(&root).args(args);
        cmd
    };
    // The SDK and the plugins are checked natively with the user's toolchain.
    // They share the guest target dir so the SDK's dependencies build once;
    // the host's target dir stays out of it.
    let native = |dir: &std::path::Path, args: &[&str]| {
        let mut cmd = step::native_guest_cargo(dir, &guest_target);
        cmd.args(args);
        cmd
    };
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ];

    let python_bots = guests::discover(&[Lang::Python])?;
    let python_steps: Vec<String> = python_bots
        .iter()
        .map(|bot| format!("tests (python/{}, native)", bot.name))
        .collect();

    let mut fuzz_fmt = step::cargo();
    fuzz_fmt
        .current_dir(root.join("fuzz"))
        .args(["fmt", "--all", "--check"]);

    let mut steps: Vec<(&str, Command)> = vec![
        // If this fails: run `cargo metadata --format-version 1 >/dev/null`
        // in fuzz/ and commit fuzz/Cargo.lock.
        ("lock (fuzz, up to date)", fuzz::check_lock()),
        ("fmt (host workspace)", host(&["fmt", "--all", "--check"])),
        ("fmt (fuzz)", fuzz_fmt),
        ("fmt (sdk/rust)", native(&sdk, &["fmt", "--check"])),
        (
            "fmt (plugins)",
            native(&guest_ws, &["fmt", "--all", "--check"]),
        ),
        ("clippy (host workspace)", host(&clippy)),
        ("clippy (sdk/rust)", native(&sdk, &clippy)),
        // The `http` feature switches the SDK to botbox:bot@0.2.0 bindings.
        (
            "clippy (sdk/rust, http)",
            native(
                &sdk,
                &[&clippy[..3], &["--features", "http"], &clippy[3..]].concat(),
            ),
        ),
        ("clippy (plugins)", native(&guest_ws, &clippy)),
    ];
    if has_nextest() {
        steps.push((
            "tests (host workspace, nextest)",
            host(&["nextest", "run", "--workspace"]),
        ));
        // nextest does not run doctests.
        steps.push((
            "doctests (host workspace)",
            host(&["test", "--workspace", "--doc"]),
        ));
    } else {
        steps.push(("tests (host workspace)", host(&["test", "--workspace"])));
    }
    // Each example bot's behaviour cases, through the real host: the
    // components were built above and the binary by the tests. The
    // templates' files run in tests/polyglot_bots.rs, which builds them.
    let bot_tests = bot_test_files(&guest_ws)?;
    let mut botbox_test = host(&["run", "--quiet", "-p", "botbox", "--", "test"]);
    botbox_test
        .args(&bot_tests)
        .arg("--component-dir")
        .arg(paths::components_dir());
    botbox_test.args(["--storage", "target/botbox-test"]);
    steps.push(("botbox test (plugins/**/bot.test.toml)", botbox_test));
    steps.push(("tests (sdk/rust, native)", native(&sdk, &["test"])));
    steps.push((
        "tests (sdk/rust with http, native)",
        native(&sdk, &["test", "--features", "http"]),
    ));
    steps.push((
        "tests (plugins, native)",
        native(&guest_ws, &["test", "--workspace"]),
    ));
    // The Python bots' pure logic, with the machine's python3; `-B` keeps
    // __pycache__ out of the source tree.
    for (bot, name) in python_bots.iter().zip(&python_steps) {
        let mut cmd = Command::new("python3");
        cmd.current_dir(&bot.dir).args(["-B", "-m", "unittest"]);
        steps.push((name, cmd));
    }

    for (name, mut cmd) in steps {
        step::run(name, &mut cmd)?;
    }
    // Each fuzz target for a bounded time; a finding fails the run.
    step::run("fuzz (build)", &mut fuzz::build())?;
    for target in fuzz::TARGETS {
        step::run(
            &format!("fuzz ({target}, {} s)", fuzz::CI_SECONDS),
            &mut fuzz::run_target(target, fuzz::CI_SECONDS)?,
        )?;
    }
    eprintln!("==> all checks passed");
    Ok(())
}

/// Every `bot.test.toml` under `plugins/`, in a stable order; build
/// output and installed packages are not searched.
fn bot_test_files(plugins: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![plugins.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() && !["target", "node_modules", "__pycache__"].contains(&name) {
                stack.push(path);
            } else if name == "bot.test.toml" {
                found.push(path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        anyhow::bail!("no bot.test.toml under {}", plugins.display());
    }
    Ok(found)
}

fn has_nextest() -> bool {
    step::probe(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        &["nextest", "--version"],
    )
    .is_some()
}
