//! The table of variables (`authvault::config::VARIABLES`) against `.env.example` and the
//! contract's configuration table: each lists exactly the variables authvault reads, and every
//! default `.env.example` shows is the one the server uses.

use std::collections::{BTreeMap, BTreeSet};

use authvault::config::VARIABLES;

/// `NAME=value` lines of `.env.example`: (name, value, commented out).
fn env_example() -> Vec<(String, String, bool)> {
    include_str!("../.env.example")
        .lines()
        .filter_map(|line| {
            let (commented, rest) = match line.trim_start().strip_prefix('#') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line.trim_start()),
            };
            let (name, value) = rest.split_once('=')?;
            let is_name = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (name.to_owned(), value.trim().to_owned(), commented))
        })
        .collect()
}

fn table() -> BTreeSet<String> {
    VARIABLES.iter().map(|v| v.name.to_owned()).collect()
}

#[test]
fn env_example_lists_every_variable_once_and_nothing_else() {
    let lines = env_example();
    let mut seen = BTreeMap::<String, usize>::new();
    for (name, _, _) in &lines {
        *seen.entry(name.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        ".env.example lists these twice: {twice:?}"
    );
    let listed: BTreeSet<String> = seen.into_keys().collect();
    assert_eq!(
        listed.difference(&table()).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in .env.example but not read by authvault"
    );
    assert_eq!(
        table().difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "read by authvault but missing from .env.example"
    );
}

#[test]
fn env_example_shows_the_defaults_the_server_uses_and_no_secret() {
    for (name, value, commented) in env_example() {
        let variable = VARIABLES.iter().find(|v| v.name == name).unwrap();
        let value = value.trim_matches('\'');
        if commented {
            // A commented-out line shows the built-in default.
            assert_eq!(
                value, variable.default,
                "{name}: .env.example shows another default"
            );
        } else {
            // An active line is a variable without a default, left empty.
            assert_eq!(value, "", "{name} has a value in .env.example");
            assert_eq!(
                variable.default, "",
                "{name} has a default: show it commented out"
            );
        }
    }
}

#[test]
fn the_contract_lists_the_same_variables() {
    // The contract lives beside the repository; a bare clone of it has none to compare.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/api-contract.md");
    let Ok(contract) = std::fs::read_to_string(path) else {
        eprintln!("skipped: {path} not found");
        return;
    };
    let section = contract
        .split("\n## Configuration")
        .nth(1)
        .expect("the contract has a Configuration section");
    let mut documented = BTreeSet::new();
    for row in section.lines().skip(1) {
        if !row.starts_with('|') {
            if row.trim().is_empty() || row.starts_with("##") {
                break;
            }
            continue;
        }
        let first = row.trim_matches('|').split('|').next().unwrap_or("");
        for word in first.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.contains('_') && word.chars().all(|c| !c.is_ascii_lowercase()) {
                documented.insert(word.to_owned());
            }
        }
    }
    assert!(
        documented.len() > 20,
        "the table was not found: {documented:?}"
    );
    // The second stage names its variables in its sections' text, in backquotes, and in the
    // first column of its own variable table.
    let is_variable = |word: &&str| {
        word.starts_with("AUTHVAULT_")
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let in_rows = contract
        .lines()
        .filter(|row| row.starts_with('|'))
        .flat_map(|row| {
            let first = row.trim_matches('|').split('|').next().unwrap_or("");
            first.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        });
    let named: BTreeSet<String> = contract
        .split('`')
        .skip(1)
        .step_by(2)
        .chain(in_rows)
        .filter(is_variable)
        .map(str::to_owned)
        .collect();
    let in_contract: BTreeSet<String> = documented.union(&named).cloned().collect();
    let read = table();
    assert_eq!(
        read.difference(&in_contract).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "read by authvault but named nowhere in the contract"
    );
    assert_eq!(
        documented.difference(&read).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the contract's Configuration table but not read by authvault"
    );
}
