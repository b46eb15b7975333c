//! `state`, `list` and `ps`: what the store and the monitors say.

use std::process::{Command, Stdio};

use husk_runtime::container;
use husk_runtime::state::Store;
use serde_json::Value;

use crate::error::{Error, Result};

pub fn state(store: &Store, id: &str) -> Result<()> {
    let v = container::state(store, id)?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

pub fn ps(store: &Store, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let pids = container::pids(store, id)?;
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            Ok(())
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = Command::new("ps")
                .args(&args)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|source| Error::Io { what: "ps", source })?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or(Error::PsOutput)?;
            println!("{header}");
            for l in lines {
                let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
                if pid.is_some_and(|p: i32| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(())
        }
        f => Err(Error::flag(
            format!("--format {f}"),
            "must be table or json",
        )),
    }
}

pub fn list(store: &Store, format: &str, quiet: bool) -> Result<()> {
    let states: Vec<Value> = container::list(store);
    if quiet {
        for s in &states {
            println!("{}", s["id"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&states).unwrap_or_default());
            Ok(())
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    s["id"].as_str().unwrap_or(""),
                    s["pid"],
                    s["status"].as_str().unwrap_or(""),
                    s["bundle"].as_str().unwrap_or(""),
                    s["created"].as_str().unwrap_or(""),
                    if s["owner"].as_str().unwrap_or("").is_empty() {
                        "root"
                    } else {
                        s["owner"].as_str().unwrap_or("")
                    }
                );
            }
            Ok(())
        }
        f => Err(Error::flag(
            format!("--format {f}"),
            "must be table or json",
        )),
    }
}
