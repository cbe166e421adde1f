//! The documentation's flag tables against the binaries: every default a table in docs/ states
//! is the one `--help` prints (clap's, from the code: the one source of each default), so a
//! default changed in the code cannot leave the docs behind.

use std::collections::HashMap;
use std::process::Command;

use fanout_tests::process::binary;

/// `[default: X]` of each long flag in `--help` output.
fn help_defaults(bin: &str) -> HashMap<String, String> {
    let out = Command::new(binary(bin)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut defaults = HashMap::new();
    let mut flag = None;
    for line in help.lines() {
        let line = line.trim();
        // A flag's own line: `-c, --concurrency <N>` or `--deadline <DEADLINE>`.
        if line.starts_with('-')
            && let Some(long) = line
                .split([' ', ','])
                .find(|w| w.starts_with("--") && w.len() > 2)
        {
            flag = Some(long.trim_end_matches('=').to_owned());
        }
        if let (Some(f), Some(rest)) = (&flag, line.strip_prefix("[default: ")) {
            defaults.insert(f.clone(), rest.trim_end_matches(']').to_owned());
        }
    }
    defaults
}

/// The text between backticks in `cell`, and what is left of it around them.
fn backticked(cell: &str) -> (Vec<String>, String) {
    let mut quoted = Vec::new();
    let mut rest = String::new();
    for (i, part) in cell.split('`').enumerate() {
        if i % 2 == 1 {
            quoted.push(part.to_owned());
        } else {
            rest.push_str(part);
        }
    }
    (quoted, rest)
}

/// (flag, default) for each table row of `doc` whose last cell is nothing but backticked
/// defaults, one for each `--flag` the row names before it (rows whose default is prose, such
/// as "off" or "one per core", say nothing a test can hold).
fn documented_defaults(doc: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut found = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let Some((last, before)) = cells.split_last() else {
            continue;
        };
        let (defaults, rest) = backticked(last);
        if defaults.is_empty() || !rest.chars().all(|c| c == ',' || c.is_whitespace()) {
            continue;
        }
        let flags: Vec<String> = before
            .iter()
            .flat_map(|cell| backticked(cell).0)
            .filter_map(|q| {
                let flag = q.split_whitespace().next()?;
                flag.starts_with("--").then(|| flag.to_owned())
            })
            .collect();
        if flags.len() == defaults.len() {
            found.extend(flags.into_iter().zip(defaults));
        }
    }
    found
}

fn check(bin: &str, doc: &str, at_least: usize) {
    let doc = format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR"));
    let help = help_defaults(bin);
    let documented = documented_defaults(&doc);
    assert!(
        documented.len() >= at_least,
        "{doc}: only {} defaults found in its tables: {documented:?}",
        documented.len()
    );
    for (flag, default) in documented {
        assert_eq!(
            help.get(&flag),
            Some(&default),
            "{doc} says {flag} defaults to `{default}`; `{bin} --help` says otherwise"
        );
    }
}

#[test]
fn the_aggregator_s_documented_defaults_are_its_own() {
    check("aggregator", "aggregator.md", 15);
}

#[test]
fn the_backend_s_documented_defaults_are_its_own() {
    check("backend", "backend.md", 8);
}
