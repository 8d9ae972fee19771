//! `fhirlake user add|list|remove`: the Flight SQL server's user file.
//!
//! Passwords are read from `FHIRLAKE_PASSWORD`, a hidden prompt (twice) on a terminal, or the first
//! line of piped stdin (never a flag, which would end up in shell history and `ps`), and stored
//! only as argon2id hashes.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fhirlake_sql::Role;
use fhirlake_sql::flight::UserFile;

/// `fhirlake user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (or change its role and password). The password comes from FHIRLAKE_PASSWORD, a
    /// hidden prompt on a terminal, or the first line of piped stdin.
    Add(AddArgs),
    /// List users and roles.
    List(FileArgs),
    /// Remove a user.
    Remove(RemoveArgs),
}

/// Where the user file is.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// User file (TOML) the server reads with --users.
    #[arg(
        long,
        env = "FHIRLAKE_USERS",
        default_value = "fhirlake-users.toml",
        value_name = "FILE"
    )]
    pub users: PathBuf,
}

/// `fhirlake user add` flags.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Login name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// steward (everything, incl. `lake.*` and the audit log), researcher (views and `raw`) or
    /// analyst (views only).
    #[arg(long, env = "FHIRLAKE_ROLE", value_name = "ROLE")]
    pub role: Role,

    #[command(flatten)]
    pub file: FileArgs,
}

/// `fhirlake user remove` flags.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Login name.
    #[arg(value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub file: FileArgs,
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("FHIRLAKE_PASSWORD") {
        return Ok(password);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // On a terminal: asked twice, not echoed (rpassword reads the terminal with echo off).
        let password = rpassword::prompt_password("password: ")
            .context("reading the password from the terminal")?;
        let again = rpassword::prompt_password("password again: ")
            .context("reading the password from the terminal")?;
        if password != again {
            bail!("the two passwords differ; nothing was saved");
        }
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Runs a `fhirlake user` subcommand.
pub fn run(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add(args) => {
            let name = args.name.trim();
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
                bail!(
                    "user name `{}` must be non-empty, without spaces or `:`",
                    args.name
                );
            }
            let password = read_password()?;
            if password.chars().count() < 8 {
                bail!("the password must have at least 8 characters");
            }
            let path = &args.file.users;
            let mut file = UserFile::load_or_default(path)?;
            file.upsert(name, args.role, &password)?;
            file.save(path)?;
            outln!("user {name} ({}) saved in {}", args.role, path.display());
        }
        UserCommand::List(args) => {
            let file = UserFile::load(&args.users)?;
            for user in &file.users {
                outln!("{}\t{}", user.name, user.role);
            }
        }
        UserCommand::Remove(args) => {
            let path = &args.file.users;
            let mut file = UserFile::load(path)?;
            let before = file.users.len();
            file.users.retain(|u| u.name != args.name);
            if file.users.len() == before {
                bail!("no user `{}` in {}", args.name, path.display());
            }
            file.save(path)?;
            outln!("user {} removed from {}", args.name, path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
