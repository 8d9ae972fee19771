//! `fhirlake.toml`: defaults for any flag, below the command line and `FHIRLAKE_*` variables.
//!
//! Top-level keys apply to every subcommand that has a flag of that name; a table named after a
//! subcommand (`[ingest]`, `[sql]`) applies to that subcommand only and wins over top-level keys.
//! Keys use the flag name with `-` or `_`: `max_rejects = 10` or `max-rejects = 10`.
//!
//! ```toml
//! lake = "s3://hospital-lake/fhir"
//! storage_option = ["aws_endpoint=http://127.0.0.1:9000", "aws_allow_http=true"]
//! [ingest]
//! landing = "/data/landing"
//! max_rejects = 100
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Command;
use toml::Value;

const DEFAULT_FILE: &str = "fhirlake.toml";

/// Reads the config file named by `--config` / `FHIRLAKE_CONFIG` (or ./fhirlake.toml if present)
/// and installs its values as defaults of `command`'s flags.
pub fn apply_config_defaults(command: Command) -> anyhow::Result<Command> {
    let Some(path) = config_path() else {
        return Ok(command);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {}", path.display()))?;
    apply(command, &table, &path)
}

fn config_path() -> Option<PathBuf> {
    // The config file must be known before clap parses, so look for the flag by hand.
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    if let Some(path) = std::env::var_os("FHIRLAKE_CONFIG") {
        return Some(PathBuf::from(path));
    }
    Path::new(DEFAULT_FILE)
        .exists()
        .then(|| PathBuf::from(DEFAULT_FILE))
}

fn apply(mut command: Command, table: &toml::Table, path: &Path) -> anyhow::Result<Command> {
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for (key, value) in table {
        if let Value::Table(sub) = value {
            if !subcommands.contains(key) {
                bail!("{}: unknown section [{key}]", path.display());
            }
            for (flag, value) in sub {
                let name = key.clone();
                let (id, text) = flag_value(flag, value, path)?;
                let known = command
                    .find_subcommand(&name)
                    .is_some_and(|s| s.get_arguments().any(|a| a.get_id() == id.as_str()));
                if !known {
                    bail!("{}: [{key}] has no option `{flag}`", path.display());
                }
                command = command.mut_subcommand(&name, |s| set_default(s, &id, &text));
            }
        } else {
            let (id, text) = flag_value(key, value, path)?;
            let mut used = false;
            for name in &subcommands {
                let has = command
                    .find_subcommand(name)
                    .is_some_and(|s| s.get_arguments().any(|a| a.get_id() == id.as_str()));
                // A value in a subcommand's own section wins over the top-level one.
                let overridden = matches!(table.get(name), Some(Value::Table(t))
                    if t.contains_key(key) || t.contains_key(&key.replace('_', "-")));
                if has && !overridden {
                    command = command.mut_subcommand(name, |s| set_default(s, &id, &text));
                    used = true;
                }
            }
            if !used {
                bail!("{}: no command has an option `{key}`", path.display());
            }
        }
    }
    Ok(command)
}

fn set_default(command: Command, id: &str, values: &[String]) -> Command {
    let values = values.to_vec();
    command.mut_arg(id, move |arg| {
        arg.default_values(values.iter().map(|v| clap::builder::OsStr::from(v.clone())))
    })
}

/// Flag id (clap uses the field name: `max_rejects`) and its default values as text.
fn flag_value(key: &str, value: &Value, path: &Path) -> anyhow::Result<(String, Vec<String>)> {
    let id = key.replace('-', "_");
    let id = match id.as_str() {
        "storage_option" => "storage_options".to_string(),
        _ => id,
    };
    let scalar = |v: &Value| -> anyhow::Result<String> {
        Ok(match v {
            Value::String(s) => s.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: `{key}` must be a string, number or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        })
    };
    let values = match value {
        Value::Array(items) => items.iter().map(scalar).collect::<anyhow::Result<_>>()?,
        other => vec![scalar(other)?],
    };
    Ok((id, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(toml_text: &str, argv: &[&str]) -> anyhow::Result<crate::cli::Cli> {
        let table: toml::Table = toml_text.parse()?;
        let command = apply(
            crate::cli::Cli::command(),
            &table,
            Path::new("fhirlake.toml"),
        )?;
        Ok(crate::cli::Cli::from_arg_matches(
            &command.try_get_matches_from(argv)?,
        )?)
    }

    #[test]
    fn config_values_become_defaults_below_the_command_line() {
        let cli = parse(
            "lake = \"/from/config\"\n[ingest]\nmax_rejects = 7\n",
            &["fhirlake", "ingest", "x.ndjson", "--unsafe-no-deid"],
        )
        .unwrap();
        let text = format!("{cli:?}");
        assert!(text.contains("/from/config"), "{text}");
        assert!(text.contains("max_rejects: Some(7)"), "{text}");

        let cli = parse(
            "lake = \"/from/config\"\n",
            &["fhirlake", "sql", "--lake", "/from/cli", "SELECT 1"],
        )
        .unwrap();
        assert!(format!("{cli:?}").contains("/from/cli"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse("colour = \"red\"\n", &["fhirlake", "tables"]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = parse("[ingest]\nbogus = 1\n", &["fhirlake", "tables"]).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
