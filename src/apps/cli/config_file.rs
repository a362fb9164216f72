//! `--config FILE`: flags from a TOML or JSON file (keys are flag names, with `_` or `-`). A
//! flag given on the command line replaces the file's value, which is then not read; every
//! value the file does give is checked here, so that its error names the file and the key.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Expands `--config FILE` into flags placed before the command line's own.
pub fn expand_config_file(args: Vec<String>) -> Result<Vec<String>> {
    let Some(pos) = args.iter().position(|a| a == "--config" || a.starts_with("--config=")) else { return Ok(args) };
    let (path, consumed) = match args[pos].strip_prefix("--config=") {
        Some(p) => (PathBuf::from(p), 1),
        None => (PathBuf::from(args.get(pos + 1).ok_or_else(|| Error::Config("--config needs a file".into()))?), 2),
    };
    let table = read_table(&path)?;
    let sub = if pos >= 2 { args.get(1) } else { args.get(pos + consumed) };
    let mut command = <crate::apps::cli::Cli as clap::CommandFactory>::command();
    command.build();
    let subcommand = sub.and_then(|s| command.find_subcommand(s)).cloned();
    let on_command_line: Vec<&str> = args[pos + consumed..]
        .iter()
        .chain(&args[..pos])
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect();
    let mut flags = vec![];
    for (key, value) in table {
        let name = key.replace('_', "-");
        if name == "config" {
            return Err(Error::format(
                &path,
                format!("key {key:?}: a config file cannot name another config file; put its flags in {}", path.display()),
            ));
        }
        if on_command_line.contains(&name.as_str()) {
            continue; // the command line's value wins
        }
        let values = file_values(&value);
        if let Some(sub) = &subcommand {
            let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(name.as_str())) else {
                return Err(Error::format(&path, format!("unknown key {key:?}: `replora {}` has no --{name} flag", sub.get_name())));
            };
            check_kind(arg, &key, &value).map_err(|e| Error::format(&path, e))?;
        }
        let flag = format!("--{name}");
        match (value, values) {
            (serde_json::Value::Bool(true), _) => flags.push(flag),
            (serde_json::Value::Bool(false) | serde_json::Value::Null, _) => {}
            (_, values) => flags.extend([flag, values.join(",")]),
        }
    }
    // The file's values alone, parsed as the command line's are: a bad one names the file.
    if let Some(sub) = &subcommand {
        let alone = [args[0].clone(), sub.get_name().to_string()].into_iter().chain(flags.iter().cloned());
        if let Err(e) = <crate::apps::cli::Cli as clap::Parser>::try_parse_from(alone) {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), InvalidValue | ValueValidation | ArgumentConflict | WrongNumberOfValues | TooManyValues | TooFewValues) {
                let message = e.render().to_string();
                let first = message.trim().trim_start_matches("error: ").lines().next().unwrap_or_default().to_string();
                return Err(Error::format(&path, first));
            }
        }
    }
    // Program and subcommand first, then the file's flags, then the command line's own.
    let split = pos.min(2);
    let mut out: Vec<String> = args[..split].to_vec();
    out.extend(flags);
    out.extend(args[split..pos].iter().cloned());
    out.extend(args[pos + consumed..].iter().cloned());
    Ok(out)
}

fn read_table(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).map_err(|e| Error::format(path, e));
    }
    let value: toml::Value = toml::from_str(&text).map_err(|e| Error::format(path, e))?;
    Ok(serde_json::to_value(value).map_err(|e| Error::format(path, e))?.as_object().cloned().unwrap_or_default())
}

/// A key's values as flag text: a list gives one per item.
fn file_values(value: &serde_json::Value) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().map(String::from).unwrap_or(v.to_string());
    match value {
        serde_json::Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    }
}

/// Switches take true or false, other flags a value.
fn check_kind(arg: &clap::Arg, key: &str, value: &serde_json::Value) -> std::result::Result<(), String> {
    let switch = !arg.get_action().takes_values();
    match (switch, value) {
        (true, serde_json::Value::Bool(_)) => return Ok(()),
        (true, _) => {
            return Err(format!("key {key:?}: --{} is a switch: write {key} = true (or false)", arg.get_long().unwrap_or_default()));
        }
        (false, serde_json::Value::Bool(_) | serde_json::Value::Null) => {
            return Err(format!("key {key:?}: --{} takes a value, not {value}", arg.get_long().unwrap_or_default()));
        }
        (false, _) => {}
    }
    Ok(())
}
