//! `ipvs-proxy list`: the kernel's IPVS table, byte-identical to `ipvsadm -L`.
//!
//! The same options mean the same as in ipvsadm 1.31. When the binary is invoked
//! as `ipvsadm` (a symlink), [`ipvsadm_main`] accepts ipvsadm's own spelling of the
//! read-only commands (`-L`/`-l`/`--list`, `-S`/`--save`) and refuses the ones
//! that change state: the agent owns the table.

use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser};
use ipvs_proxy::listing::names::{Numeric, Resolver, Services, System};
use ipvs_proxy::listing::table::{Family, Service, ServiceKey, protocol};
use ipvs_proxy::listing::{JsonListing, conn, kernel, text};

/// Arguments of `ipvs-proxy list` (and of `ipvsadm -L` in ipvsadm mode).
#[derive(Clone, Debug, Default, Args)]
pub struct ListArgs {
    /// Numeric output of addresses and ports.
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// List the connection table (/proc/net/ip_vs_conn).
    #[arg(short = 'c', long = "connection", conflicts_with_all = ["service", "timeout", "stats", "rate", "thresholds"])]
    pub connection: bool,
    /// Only this TCP service, `address:port`.
    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "ADDR:PORT",
        group = "service"
    )]
    pub tcp_service: Option<String>,
    /// Only this UDP service, `address:port`.
    #[arg(
        short = 'u',
        long = "udp-service",
        value_name = "ADDR:PORT",
        group = "service"
    )]
    pub udp_service: Option<String>,
    /// Only this SCTP service, `address:port`.
    #[arg(long = "sctp-service", value_name = "ADDR:PORT", group = "service")]
    pub sctp_service: Option<String>,
    /// Only this firewall-mark service.
    #[arg(
        short = 'f',
        long = "fwmark-service",
        value_name = "MARK",
        group = "service"
    )]
    pub fwmark_service: Option<u32>,
    /// The firewall-mark service is IPv6 (with -f).
    #[arg(short = '6', long = "ipv6", requires = "fwmark_service")]
    pub ipv6: bool,
    /// Show the kernel's TCP, TCP FIN and UDP timeouts.
    #[arg(long, conflicts_with_all = ["service", "stats", "rate", "thresholds", "persistent_conn"])]
    pub timeout: bool,
    /// Show the connection-synchronisation daemons.
    #[arg(long, conflicts_with_all = ["connection", "service", "timeout", "stats", "rate", "thresholds", "persistent_conn", "save"])]
    pub daemon: bool,
    /// Show counters.
    #[arg(long)]
    pub stats: bool,
    /// Show rates.
    #[arg(long)]
    pub rate: bool,
    /// Show connection thresholds.
    #[arg(long)]
    pub thresholds: bool,
    /// Show persistent connections.
    #[arg(long = "persistent-conn")]
    pub persistent_conn: bool,
    /// Show tunnel details.
    #[arg(long = "tun-info")]
    pub tun_info: bool,
    /// Sort services and servers (the default; accepted for compatibility).
    #[arg(long)]
    pub sort: bool,
    /// Keep the kernel's order.
    #[arg(long)]
    pub nosort: bool,
    /// Exact numbers instead of K/M/G/T.
    #[arg(short = 'X', long)]
    pub exact: bool,
    /// Print commands that recreate the table (`ipvsadm -S`).
    #[arg(short = 'S', long = "save", conflicts_with_all = ["connection", "service", "timeout", "stats", "rate", "thresholds", "persistent_conn", "tun_info"])]
    pub save: bool,
    /// Print the same data as JSON (schema in the `ipvs_proxy::listing` docs).
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    fn format(&self) -> text::Format {
        text::Format {
            stats: self.stats,
            rate: self.rate,
            thresholds: self.thresholds,
            persistent_conn: self.persistent_conn,
            tun_info: self.tun_info,
            exact: self.exact,
            nosort: self.nosort,
            rules: self.save,
        }
    }

    fn resolver(&self) -> Box<dyn Resolver> {
        if self.numeric {
            Box::new(Numeric)
        } else {
            Box::new(System::new())
        }
    }

    /// The service selected with -t/-u/--sctp-service/-f, if any.
    fn selected_service(&self) -> Result<Option<ServiceKey>> {
        if let Some(mark) = self.fwmark_service {
            let family = if self.ipv6 {
                Family::Ipv6
            } else {
                Family::Ipv4
            };
            return Ok(Some(ServiceKey::Fwmark { mark, family }));
        }
        let (proto, spec) = match (&self.tcp_service, &self.udp_service, &self.sctp_service) {
            (Some(spec), _, _) => (protocol::TCP, spec),
            (_, Some(spec), _) => (protocol::UDP, spec),
            (_, _, Some(spec)) => (protocol::SCTP, spec),
            _ => return Ok(None),
        };
        parse_service(spec, proto).map(Some)
    }
}

/// Parses `host[:port]` or `[v6]:port` as ipvsadm does: addresses or host names,
/// port numbers or service names; a missing port is 0.
fn parse_service(spec: &str, proto: u16) -> Result<ServiceKey> {
    let illegal = || {
        anyhow::anyhow!(
            "illegal virtual server address[:port] specified: {spec:?} \
             (write it as 10.96.0.10:80 or [2001:db8::1]:80)"
        )
    };
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, rest) = rest.split_once(']').ok_or_else(illegal)?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or_else(illegal)?),
        };
        (host, port)
    } else {
        match spec.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (spec, None),
        }
    };
    let address: IpAddr = match host.parse() {
        Ok(address) => address,
        Err(_) => dns_lookup_host(host).ok_or_else(illegal)?,
    };
    let port = match port {
        None => 0,
        Some(port) => match port.parse::<u16>() {
            Ok(port) => port,
            Err(_) => std::fs::read_to_string("/etc/services")
                .ok()
                .and_then(|db| Services::parse(&db).port(port, proto))
                .ok_or_else(illegal)?,
        },
    };
    Ok(ServiceKey::Address {
        protocol: proto,
        address,
        port,
    })
}

/// ipvsadm resolves service host names to IPv4 addresses only.
fn dns_lookup_host(host: &str) -> Option<IpAddr> {
    ipvs_proxy::listing::names::lookup_host_v4(host)
}

fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `ipvs-proxy list | head` must not report an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the listing to standard output"),
    }
}

/// Prints the listing.
pub fn run(args: ListArgs) -> Result<()> {
    let names = args.resolver();
    if args.connection {
        let path = "/proc/net/ip_vs_conn";
        let table = std::fs::read_to_string(path).with_context(|| {
            format!("cannot open file {path}: is IPVS loaded (modprobe ip_vs)?")
        })?;
        let connections = conn::parse(&table)?;
        if args.json {
            let json = serde_json::json!({ "connections": connections });
            return write_stdout(&format!("{}\n", serde_json::to_string_pretty(&json)?));
        }
        return write_stdout(&conn::list(
            &connections,
            args.persistent_conn,
            names.as_ref(),
        ));
    }
    if args.daemon {
        let daemons = kernel::read_daemons()?;
        if args.json {
            let json = serde_json::json!({ "daemons": daemons });
            return write_stdout(&format!("{}\n", serde_json::to_string_pretty(&json)?));
        }
        return write_stdout(&text::daemons(&daemons));
    }
    if args.timeout {
        let timeouts = kernel::read_timeouts()?;
        if args.json {
            let json = serde_json::json!({ "timeouts": timeouts });
            return write_stdout(&format!("{}\n", serde_json::to_string_pretty(&json)?));
        }
        return write_stdout(&text::timeouts(&timeouts));
    }
    let table = kernel::read_table()?;
    let selected = args.selected_service()?;
    let services: Vec<&Service> = match &selected {
        None => table.services.iter().collect(),
        Some(key) => {
            let found: Vec<&Service> = table.services.iter().filter(|s| &s.key == key).collect();
            if found.is_empty() {
                // ipvsadm's own words and exit status for a missing service.
                eprintln!("No such service");
                std::process::exit(1);
            }
            found
        }
    };
    if args.json {
        let mut listing = JsonListing::new(&table, args.nosort, None);
        if let Some(key) = &selected {
            listing.services.retain(|s| &s.key == key);
        }
        return write_stdout(&format!("{}\n", serde_json::to_string_pretty(&listing)?));
    }
    let format = args.format();
    let out = match selected {
        Some(_) => text::list_one(services[0], format, names.as_ref()),
        None => text::list_all(&table, format, names.as_ref()),
    };
    write_stdout(&out)
}

/// The command line of the binary when it is invoked as `ipvsadm`.
#[derive(Debug, Parser)]
#[command(name = "ipvsadm", disable_version_flag = true)]
struct IpvsadmCli {
    /// List the table (the default).
    #[arg(short = 'L', visible_short_alias = 'l', long = "list")]
    list: bool,
    #[command(flatten)]
    args: ListArgs,
}

/// ipvsadm's commands that change kernel state, in short and long spelling.
const WRITE_COMMANDS: &[(char, &str)] = &[
    ('A', "add-service"),
    ('E', "edit-service"),
    ('D', "delete-service"),
    ('C', "clear"),
    ('R', "restore"),
    ('Z', "zero"),
    ('a', "add-server"),
    ('e', "edit-server"),
    ('d', "delete-server"),
];
const WRITE_LONG_ONLY: &[&str] = &["set", "start-daemon", "stop-daemon"];

/// The state-changing ipvsadm command in `argv`, if there is one.
fn write_command(argv: &[String]) -> Option<String> {
    let mut skip_value = false;
    for arg in argv.iter().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or_default();
            if WRITE_COMMANDS.iter().any(|(_, l)| *l == name) || WRITE_LONG_ONLY.contains(&name) {
                return Some(arg.clone());
            }
            continue;
        }
        if let Some(cluster) = arg.strip_prefix('-') {
            for c in cluster.chars() {
                if WRITE_COMMANDS.iter().any(|(s, _)| *s == c) {
                    return Some(format!("-{c}"));
                }
                // The rest of the cluster (or the next argument) is this option's value.
                if matches!(c, 't' | 'u' | 'f') {
                    skip_value = cluster.ends_with(c);
                    break;
                }
            }
        }
    }
    None
}

/// Runs the binary as `ipvsadm`: read-only listing, refusing changes.
pub fn ipvsadm_main(argv: Vec<String>) -> Result<()> {
    if let Some(command) = write_command(&argv) {
        bail!(
            "ipvsadm {command} refused: this node's IPVS table is owned by ipvs-proxy, \
             which would undo the change; change the Kubernetes Service instead \
             (only listing is available: ipvsadm -L, ipvsadm -S)"
        );
    }
    let cli = IpvsadmCli::parse_from(&argv);
    // `ipvsadm` alone, like `ipvsadm -L`, lists the table.
    let _ = cli.list;
    run(cli.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn write_commands_are_found_in_every_spelling() {
        for line in [
            "ipvsadm -A -t 10.0.0.1:80 -s rr",
            "ipvsadm --add-service -t 10.0.0.1:80",
            "ipvsadm -C",
            "ipvsadm --clear",
            "ipvsadm -Z",
            "ipvsadm -nd -t 10.0.0.1:80 -r 10.0.0.2",
            "ipvsadm --set 900 120 300",
            "ipvsadm --start-daemon master",
            "ipvsadm -R",
        ] {
            assert!(write_command(&argv(line)).is_some(), "{line}");
        }
    }

    #[test]
    fn listing_commands_pass_even_with_letters_in_service_names() {
        for line in [
            "ipvsadm",
            "ipvsadm -Ln",
            "ipvsadm -L -n --stats --exact",
            "ipvsadm -Lnt demo.example:80",
            "ipvsadm -L -t dead.beef:http",
            "ipvsadm -lnc",
            "ipvsadm -S -n",
        ] {
            assert_eq!(write_command(&argv(line)), None, "{line}");
        }
    }

    #[test]
    fn ipvsadm_spellings_parse() {
        let cli = IpvsadmCli::try_parse_from(argv("ipvsadm -Ln --stats -t 10.0.0.1:80")).unwrap();
        assert!(cli.list && cli.args.numeric && cli.args.stats);
        assert_eq!(cli.args.tcp_service.as_deref(), Some("10.0.0.1:80"));
        let cli = IpvsadmCli::try_parse_from(argv("ipvsadm -Sn")).unwrap();
        assert!(cli.args.save && cli.args.numeric);
    }

    #[test]
    fn conflicting_options_are_refused_like_ipvsadm() {
        assert!(IpvsadmCli::try_parse_from(argv("ipvsadm -L -c --stats")).is_err());
        assert!(
            IpvsadmCli::try_parse_from(argv("ipvsadm -L --timeout --persistent-conn")).is_err()
        );
        assert!(IpvsadmCli::try_parse_from(argv("ipvsadm -L -6")).is_err());
        assert!(
            IpvsadmCli::try_parse_from(argv("ipvsadm -L --daemon"))
                .is_ok_and(|cli| cli.args.daemon)
        );
        for line in [
            "ipvsadm -L --daemon --stats",
            "ipvsadm -L --daemon --timeout",
            "ipvsadm -Lc --daemon",
        ] {
            assert!(IpvsadmCli::try_parse_from(argv(line)).is_err(), "{line}");
        }
    }

    #[test]
    fn service_addresses_parse_in_ipvsadm_notation() {
        assert_eq!(
            parse_service("10.96.0.10:80", protocol::TCP).unwrap(),
            ServiceKey::Address {
                protocol: protocol::TCP,
                address: "10.96.0.10".parse().unwrap(),
                port: 80
            }
        );
        assert_eq!(
            parse_service("[2001:db8::1]:53", protocol::UDP).unwrap(),
            ServiceKey::Address {
                protocol: protocol::UDP,
                address: "2001:db8::1".parse().unwrap(),
                port: 53
            }
        );
        let err = parse_service("[2001:db8::1", protocol::TCP).unwrap_err();
        assert!(err.to_string().contains("illegal virtual server"), "{err}");
    }
}
