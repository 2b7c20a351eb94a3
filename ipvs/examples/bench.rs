//! Benchmark: program 10,000 TCP services x 10 destinations with the crate (one batch) and
//! with `ipvsadm -R`, then dump them with the crate and with `ipvsadm -Sn`.
//! Run inside an empty network namespace as root (`scripts/bench ipvs` does this in the
//! kernel lab, one fresh namespace per phase). Prints one `key: value` line per figure.
//!
//! `bench [services] [destinations-per-service] [ipvsadm|crate|both]`

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Instant;

use ipvs_netlink::{
    Change, Destination, ForwardMethod, IpvsHandle, Scheduler, Service, ServiceKey,
};

fn service_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i)
}

fn dest_addr(i: u32, d: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + d)
}

/// What one run does, so each tool can start from a fresh network namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `ipvsadm -R`, then `ipvsadm -Sn`.
    Ipvsadm,
    /// The crate's batch, then its dump.
    Crate,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let services: u32 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let per_service: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);
    let phases = match args.next().as_deref() {
        None | Some("both") => vec![Phase::Ipvsadm, Phase::Crate],
        Some("ipvsadm") => vec![Phase::Ipvsadm],
        Some("crate") => vec![Phase::Crate],
        Some(other) => {
            return Err(format!("unknown phase {other:?}: ipvsadm, crate or both").into());
        }
    };
    let objects = u64::from(services) * u64::from(per_service + 1);

    let mut ipvs = IpvsHandle::new()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "services: {services}")?;
    writeln!(
        out,
        "destinations: {}",
        u64::from(services) * u64::from(per_service)
    )?;
    writeln!(out, "objects: {objects}")?;
    for phase in phases {
        // Deleted destinations wait in a per-namespace trash that every later add
        // searches linearly: a phase after a flush in the same namespace is slower for
        // reasons that have nothing to do with the tool. Run one phase per namespace
        // to compare the tools fairly; `both` is kept for quick looks.
        ipvs.flush()?;
        match phase {
            Phase::Ipvsadm => ipvsadm_phase(services, per_service, objects, &mut out)?,
            Phase::Crate => crate_phase(&mut ipvs, services, per_service, &mut out)?,
        }
    }
    ipvs.flush()?;
    Ok(())
}

fn ipvsadm_phase(
    services: u32,
    per_service: u32,
    objects: u64,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut restore = String::new();
    for i in 0..services {
        let vip = service_addr(i);
        restore.push_str(&format!("-A -t {vip}:80 -s rr\n"));
        for d in 0..per_service {
            restore.push_str(&format!(
                "-a -t {vip}:80 -r {}:8080 -m -w 1\n",
                dest_addr(i, d)
            ));
        }
    }
    let path = std::env::temp_dir().join(format!("ipvs-bench-{}.restore", std::process::id()));
    std::fs::write(&path, &restore)?;
    let started = Instant::now();
    let status = Command::new("ipvsadm")
        .arg("-R")
        .stdin(std::fs::File::open(&path)?)
        .status()?;
    let program = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    assert!(status.success(), "ipvsadm -R failed");

    let started = Instant::now();
    let mut save = Command::new("ipvsadm")
        .arg("-Sn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut saved = String::new();
    std::io::Read::read_to_string(save.stdout.as_mut().unwrap(), &mut saved)?;
    save.wait()?;
    let dump = started.elapsed().as_secs_f64();
    assert_eq!(
        saved.lines().count() as u64,
        objects,
        "ipvsadm -Sn line count"
    );
    writeln!(out, "program_ipvsadm_restore_seconds: {program:.3}")?;
    writeln!(out, "dump_ipvsadm_save_seconds: {dump:.3}")?;
    Ok(())
}

fn crate_phase(
    ipvs: &mut IpvsHandle,
    services: u32,
    per_service: u32,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut changes = Vec::with_capacity((services * (per_service + 1)) as usize);
    for i in 0..services {
        let key = ServiceKey::tcp(IpAddr::V4(service_addr(i)), 80);
        changes.push(Change::AddService(Service::new(key, Scheduler::RoundRobin)));
        for d in 0..per_service {
            changes.push(Change::AddDestination(
                key,
                Destination::new(IpAddr::V4(dest_addr(i, d)), 8080, ForwardMethod::Masquerade),
            ));
        }
    }
    let sends_before = ipvs.sendmsg_count();
    let started = Instant::now();
    let results = ipvs.apply_batch(&changes)?;
    let program = started.elapsed().as_secs_f64();
    let sends = ipvs.sendmsg_count() - sends_before;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e}");
    }

    let started = Instant::now();
    let all = ipvs.services_with_destinations()?;
    let dump = started.elapsed().as_secs_f64();
    let dumped: u64 = all.iter().map(|(_, d)| 1 + d.len() as u64).sum();
    writeln!(out, "program_crate_seconds: {program:.3}")?;
    writeln!(out, "program_crate_failed: {failed}")?;
    writeln!(out, "program_crate_sendmsg_calls: {sends}")?;
    writeln!(out, "dump_crate_seconds: {dump:.3}")?;
    writeln!(out, "dump_crate_objects: {dumped}")?;
    Ok(())
}
