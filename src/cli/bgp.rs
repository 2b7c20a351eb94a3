//! `ipvs-proxy bgp`: the BGP neighbours of this node's agent, with state, uptime,
//! prefixes sent and BFD state (like `birdc show protocols` or `vtysh -c 'show bgp
//! summary'`). It sends the request line `bgp` on the agent's status socket and reads
//! one JSON line back: `{"neighbors": [...]}` or `{"error": "..."}`
//! (`ipvs_proxy::announce::bgp::BgpReply`).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ipvs_proxy::announce::bgp::{self, BgpReply};
use ipvs_proxy::observe::status;

/// Arguments of `ipvs-proxy bgp`.
#[derive(Debug, Args)]
pub struct BgpArgs {
    /// The agent's status socket (`run --status-socket`).
    #[arg(long, default_value = status::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the neighbours as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the agent's BGP neighbours.
pub fn run(args: BgpArgs) -> Result<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(&args.socket)
        .with_context(|| format!("cannot reach the agent at {}", args.socket.display()))?;
    stream.set_read_timeout(Some(status::CLIENT_TIMEOUT))?;
    stream.write_all(b"bgp\n")?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the agent's answer")?;
    let neighbors = match serde_json::from_str::<BgpReply>(answer.trim()) {
        Ok(BgpReply::Neighbors(n)) => n,
        Ok(BgpReply::Error(e)) => bail!("the agent answered: {e}"),
        // An agent without the BGP request answers with its generic error object.
        Err(_) => bail!(
            "the agent did not answer the BGP request: {}",
            answer.trim()
        ),
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&neighbors)?)
    } else {
        bgp::render_text(&neighbors)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
