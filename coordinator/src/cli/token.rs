//! `coordinator token create|list|revoke`: submitter tokens, through the admin API of a running
//! coordinator (so it works the same on SQLite and on a PostgreSQL cluster).

use std::process::ExitCode;

use sparecycles_protocol::{Millis, TokenView};
use uuid::Uuid;

use super::Connection;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a submitter token and print it (shown this once; the coordinator keeps a hash).
    Create {
        /// Who the token is for, shown in `token list`.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List submitter tokens (never their secrets).
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Revoke a submitter token: it stops working at once; its jobs stay.
    Revoke {
        /// The token's id, from `token list`.
        id: Uuid,
        #[command(flatten)]
        conn: Connection,
    },
}

/// A time as UTC text, for listings.
fn when(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn line(t: &TokenView) -> String {
    let state = match t.revoked_at {
        Some(at) => format!("revoked {}", when(at)),
        None => "active".to_owned(),
    };
    format!(
        "{}  {:<24}  created {}  {state}",
        t.id,
        t.name,
        when(t.created_at)
    )
}

pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = |conn: &Connection| conn.client();
    match args.command {
        TokenCommand::Create { name, conn } => {
            let client = client(&conn)?;
            let created = client.create_token(&name).await?;
            println!(
                "created submitter token {} ({})",
                created.view.id, created.view.name
            );
            println!("{}", created.token);
            eprintln!("this is the only time the token is shown: store it now");
        }
        TokenCommand::List { conn } => {
            let client = client(&conn)?;
            let tokens = client.tokens().await?;
            if tokens.is_empty() {
                println!("no submitter tokens");
            }
            for t in &tokens {
                println!("{}", line(t));
            }
        }
        TokenCommand::Revoke { id, conn } => {
            let client = client(&conn)?;
            let t = client.revoke_token(id).await?;
            println!("{}", line(&t));
        }
    }
    Ok(ExitCode::SUCCESS)
}
