//! `qlam-auth`: log in once, then get tokens for scripts and Slurm jobs.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod exit;
mod logger;
mod ui;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ConfigCommand, SshCommand};
use exit::Failure;
use std::process::ExitCode;

fn run(cli: Cli) -> Result<(), Failure> {
    // The site file's path was read once, in `main` (token-core reads no environment by
    // itself).
    let site_file = commands::site_file().to_path_buf();
    match cli.command {
        Command::Ssh(SshCommand::Sign(a)) => commands::ssh::sign(&a, &site_file),
        Command::Ssh(SshCommand::Check(a)) => commands::ssh::check(&a, &site_file),
        Command::Ssh(SshCommand::Config(a)) => commands::ssh::config(&a, &site_file),
        Command::Login(a) => commands::login::run(&a),
        Command::Config(ConfigCommand::Init(a)) => commands::config::init(&a),
        Command::Config(ConfigCommand::Show(a)) => commands::config::show(&a),
        Command::UseContext { name } => commands::config::use_context(&name),
        Command::Status(a) => commands::status::run(&a),
        Command::Token(a) => commands::token::run(&a),
        Command::Logout(a) => commands::logout::run(&a),
        Command::Doctor(a) => commands::doctor::run(&a),
        Command::JobRenewer(a) => commands::renewer::run(&a),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "qlam-auth", &mut out);
            write_out(&out)
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| {
                Failure::msg(
                    format!(
                        "cannot write the man pages into {} ({e}); create the directory or \
                         choose another with --dir",
                        dir.display()
                    ),
                    exit::OTHER,
                )
            })?;
            ui::say(&format!("Wrote the man pages into {}.\n", dir.display()));
            Ok(())
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| {
                    Failure::msg(format!("cannot render the man page: {e}"), exit::OTHER)
                })?;
            write_out(&out)
        }
    }
}

fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let text = String::from_utf8_lossy(bytes);
    ui::emit(&[&text]).map_err(|e| {
        Failure::msg(
            format!("cannot write to stdout ({e}); redirect it to a file"),
            exit::OTHER,
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.verbose);
    commands::set_site_file(
        std::env::var_os(token_core::site::ENV_SITE_FILE)
            .filter(|p| !p.is_empty())
            .map_or_else(
                || std::path::PathBuf::from(token_core::site::DEFAULT_SITE_FILE),
                std::path::PathBuf::from,
            ),
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.is_reported() {
                eprintln!("qlam-auth: error: {f}");
            }
            ExitCode::from(f.code())
        }
    }
}
