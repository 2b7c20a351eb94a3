//! Kernel-lab tests: every test programs IPVS in its own network namespace with the crate and
//! checks the result with the crate and with `ipvsadm`. Run with
//! `scripts/vm-test -p ipvs-netlink`.

use std::net::IpAddr;
use std::time::Duration;

use ipvs_netlink::convert::{Request, key_attributes};
use ipvs_netlink::packet::constants::IPVS_CMD_NEW_SERVICE;
use ipvs_netlink::packet::{Attribute, IpvsMessage, ServiceAttribute};
use ipvs_netlink::*;
use netns_lab::{Netns, veth, wait_until};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A namespace with routes to 10/8 and fd00::/64 through a dummy link: the kernel refuses
/// destinations whose address it cannot route.
fn node(prefix: &str) -> Netns {
    let ns = Netns::new(prefix);
    ns.sh(
        "ip link set lo up; ip link add d0 type dummy; ip link set d0 up; \
           ip addr add 10.0.0.254/8 dev d0; ip -6 addr add fd00::fe/64 dev d0 nodad",
    );
    ns
}

fn ipvs() -> IpvsHandle {
    IpvsHandle::new().expect("open IPVS handle")
}

/// One service per scheduler, every flag, every forwarding method, IPv4, IPv6 and fwmark.
fn fixture_state() -> Vec<(Service, Vec<Destination>)> {
    let mut state = Vec::new();
    for (i, scheduler) in Scheduler::ALL.iter().enumerate() {
        let key = ServiceKey::tcp(ip(&format!("10.1.0.{}", i + 1)), 80);
        let mut service = Service::new(key, scheduler.clone());
        match scheduler {
            Scheduler::SourceHashing => {
                service.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT
            }
            Scheduler::Maglev => service.flags = ServiceFlags::MH_FALLBACK | ServiceFlags::MH_PORT,
            Scheduler::RoundRobin => {
                service = service.persistent(300);
                service.netmask = 24;
            }
            _ => {}
        }
        let dest = Destination::new(
            ip(&format!("10.2.0.{}", i + 1)),
            8080,
            ForwardMethod::Masquerade,
        )
        .weight(i as u32 + 1);
        state.push((service, vec![dest]));
    }

    let mut udp = Service::new(
        ServiceKey::udp(ip("10.1.1.1"), 53),
        Scheduler::WeightedRoundRobin,
    );
    udp.flags = ServiceFlags::ONE_PACKET;
    let mut masq = Destination::new(ip("10.2.1.1"), 5353, ForwardMethod::Masquerade).weight(7);
    masq.upper_threshold = 100;
    masq.lower_threshold = 10;
    let route = Destination::new(ip("10.2.1.2"), 53, ForwardMethod::DirectRoute).weight(0);
    let ipip = Destination::new(ip("10.2.1.3"), 53, ForwardMethod::Tunnel);
    let mut gue = Destination::new(ip("10.2.1.4"), 53, ForwardMethod::Tunnel);
    gue.tunnel_type = TunnelType::Gue;
    gue.tunnel_port = 6080;
    gue.tunnel_flags = TunnelFlags::CSUM;
    let mut gre = Destination::new(ip("10.2.1.5"), 53, ForwardMethod::Tunnel);
    gre.tunnel_type = TunnelType::Gre;
    let local = Destination::new(ip("10.0.0.254"), 53, ForwardMethod::Local);
    let bypass = Destination::new(ip("10.2.1.6"), 53, ForwardMethod::Bypass);
    // Mixed family: the kernel allows an IPv6 real server behind an IPv4 service only
    // through a tunnel.
    let mixed = Destination::new(ip("fd00::5"), 53, ForwardMethod::Tunnel);
    state.push((udp, vec![masq, route, ipip, gue, gre, local, bypass, mixed]));

    let mut sctp = Service::new(
        ServiceKey::Inet {
            protocol: Protocol::Sctp,
            addr: ip("10.1.1.2"),
            port: 99,
        },
        Scheduler::WeightedOverflow,
    )
    .persistent(60);
    sctp.pe_name = Some("sip".into());
    state.push((sctp, vec![]));

    let v6 =
        Service::new(ServiceKey::tcp(ip("fd00::1"), 443), Scheduler::NeverQueue).persistent(30);
    state.push((
        v6,
        vec![Destination::new(
            ip("fd00::2"),
            8443,
            ForwardMethod::Masquerade,
        )],
    ));

    let fwm4 = Service::new(
        ServiceKey::Fwmark {
            family: AddressFamily::Inet,
            mark: 7,
        },
        Scheduler::WeightedLeastConnection,
    );
    state.push((
        fwm4,
        vec![Destination::new(
            ip("10.2.2.1"),
            0,
            ForwardMethod::DirectRoute,
        )],
    ));
    let fwm6 = Service::new(
        ServiceKey::Fwmark {
            family: AddressFamily::Inet6,
            mark: 8,
        },
        Scheduler::LeastConnection,
    );
    state.push((fwm6, vec![]));
    state
}

fn program(ipvs: &mut IpvsHandle, state: &[(Service, Vec<Destination>)]) {
    for (service, dests) in state {
        ipvs.add_service(service).unwrap_or_else(|e| panic!("{e}"));
        for dest in dests {
            ipvs.add_destination(&service.key, dest)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The writable part of a service, as the kernel reports it (it adds HASHED).
fn comparable(service: &Service) -> Service {
    let mut service = service.clone();
    service.flags -= ServiceFlags::HASHED;
    service.stats = Stats::default();
    service
}

fn comparable_dest(dest: &Destination) -> Destination {
    let mut dest = dest.clone();
    dest.stats = Stats::default();
    if dest.forward != ForwardMethod::Tunnel {
        dest.tunnel_type = TunnelType::Ipip;
        dest.tunnel_port = 0;
        dest.tunnel_flags = TunnelFlags::empty();
    }
    dest
}

fn assert_state_matches(ipvs: &mut IpvsHandle, state: &[(Service, Vec<Destination>)]) {
    let listed = ipvs.services().unwrap();
    assert_eq!(listed.len(), state.len(), "{listed:#?}");
    for (service, dests) in state {
        let found = listed
            .iter()
            .find(|s| s.key == service.key)
            .unwrap_or_else(|| panic!("{} missing from {listed:#?}", service.key));
        assert!(found.flags.contains(ServiceFlags::HASHED));
        assert_eq!(comparable(found), comparable(service));
        assert_eq!(
            comparable(&ipvs.service(&service.key).unwrap()),
            comparable(service)
        );
        let mut got: Vec<_> = ipvs
            .destinations(&service.key)
            .unwrap()
            .iter()
            .map(comparable_dest)
            .collect();
        let mut want: Vec<_> = dests.iter().map(comparable_dest).collect();
        got.sort_by_key(|d| d.key());
        want.sort_by_key(|d| d.key());
        assert_eq!(got, want, "destinations of {}", service.key);
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn every_scheduler_flag_and_forwarding_method_round_trips_through_crate_and_ipvsadm() {
    let ns = node("rt");
    let state = fixture_state();
    ns.run(|| {
        let mut ipvs = ipvs();
        program(&mut ipvs, &state);
        assert_state_matches(&mut ipvs, &state);
    });

    let saved = ns.sh("ipvsadm -S -n");
    let missing = [
        "-A -t 10.1.0.1:80 -s rr -p 300 -M 255.255.255.0",
        "-A -t 10.1.0.8:80 -s sh -b sh-fallback,sh-port",
        "-A -t 10.1.0.11:80 -s mh -b mh-fallback,mh-port",
        "-A -t 10.1.0.13:80 -s ovf",
        "-a -t 10.1.0.2:80 -r 10.2.0.2:8080 -m -w 2",
        "-A -u 10.1.1.1:53 -s wrr -o",
        // `ipvsadm -S` does not save thresholds; they are checked with --thresholds below.
        "-a -u 10.1.1.1:53 -r 10.2.1.1:5353 -m -w 7",
        "-a -u 10.1.1.1:53 -r 10.2.1.2:53 -g -w 0",
        "-a -u 10.1.1.1:53 -r 10.2.1.3:53 -i -w 1 --tun-type ipip",
        "-a -u 10.1.1.1:53 -r 10.2.1.4:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
        "-a -u 10.1.1.1:53 -r 10.2.1.5:53 -i -w 1 --tun-type gre --tun-nocsum",
        // ipvsadm has no word for the bypass method.
        "-a -u 10.1.1.1:53 -r 10.2.1.6:53 (null) -w 1",
        "-a -u 10.1.1.1:53 -r [fd00::5]:53 -i -w 1 --tun-type ipip",
        "-A --sctp-service 10.1.1.2:99 -s ovf -p 60 --pe sip",
        "-A -t [fd00::1]:443 -s nq -p 30",
        "-a -t [fd00::1]:443 -r [fd00::2]:8443 -m -w 1",
        "-A -f 7 -s wlc",
        "-a -f 7 -r 10.2.2.1:0 -g -w 1",
        "-A -f 8 -6 -s lc",
    ]
    .into_iter()
    .filter(|line| !saved.lines().any(|l| l.trim() == *line))
    .collect::<Vec<_>>();
    assert!(
        missing.is_empty(),
        "{missing:#?} not in ipvsadm -S -n:\n{saved}"
    );
    let listing = ns.sh("ipvsadm -Ln --persistent-conn");
    let missing = [
        "TCP  10.1.0.1:80 rr persistent 300 mask 255.255.255.0",
        "TCP  10.1.0.8:80 sh (sh-fallback,sh-port)",
        "UDP  10.1.1.1:53 wrr ops",
        "SCTP 10.1.1.2:99 ovf persistent 60 pe sip",
        "TCP  [fd00::1]:443 nq persistent 30",
        "FWM  8 IPv6 lc",
    ]
    .into_iter()
    .filter(|line| !listing.lines().any(|l| l.trim() == *line))
    .collect::<Vec<_>>();
    assert!(missing.is_empty(), "{missing:#?} not in:\n{listing}");
    let thresholds = ns.sh("ipvsadm -Ln --thresholds -u 10.1.1.1:53");
    assert!(
        thresholds.lines().any(|l| l.split_whitespace().take(4).eq([
            "->",
            "10.2.1.1:5353",
            "100",
            "10"
        ])),
        "{thresholds}"
    );
    assert!(listing.contains("-> 10.0.0.254:53"), "{listing}");
    let local = listing
        .lines()
        .find(|l| l.contains("10.0.0.254:53"))
        .unwrap();
    let bypass = ns.sh("ipvsadm -Ln");
    assert!(
        bypass
            .lines()
            .any(|l| l.contains("10.0.0.254:53") && l.contains("Local")),
        "{bypass}\n{local}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn state_created_by_ipvsadm_reads_back_in_the_crate() {
    let ns = node("rev");
    ns.sh("ipvsadm -A -t 10.1.0.1:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0; \
           ipvsadm -a -t 10.1.0.1:80 -r 10.2.0.1:8080 -m -w 3 -x 100 -y 10; \
           ipvsadm -a -t 10.1.0.1:80 -r 10.2.0.2:8080 -i --tun-type gue --tun-port 6080 --tun-csum; \
           ipvsadm -A -u [fd00::1]:53 -s mh -b mh-port -o; \
           ipvsadm -a -u [fd00::1]:53 -r [fd00::2]:53 -g -w 5; \
           ipvsadm -A -f 9 -6 -s dh; \
           ipvsadm -A --sctp-service 10.1.1.2:99 -s fo -p 60 --pe sip");
    ns.run(|| {
        let mut ipvs = ipvs();
        let sh = ipvs.service(&ServiceKey::tcp(ip("10.1.0.1"), 80)).unwrap();
        assert_eq!(sh.scheduler, Scheduler::SourceHashing);
        assert_eq!(
            sh.flags - ServiceFlags::HASHED,
            ServiceFlags::PERSISTENT | ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT
        );
        assert_eq!((sh.timeout, sh.netmask), (300, 24));
        let dests = ipvs.destinations(&sh.key).unwrap();
        let masq = dests.iter().find(|d| d.addr == ip("10.2.0.1")).unwrap();
        assert_eq!(
            (
                masq.port,
                masq.forward,
                masq.weight,
                masq.upper_threshold,
                masq.lower_threshold
            ),
            (8080, ForwardMethod::Masquerade, 3, 100, 10)
        );
        let gue = dests.iter().find(|d| d.addr == ip("10.2.0.2")).unwrap();
        assert_eq!(
            (
                gue.forward,
                gue.tunnel_type,
                gue.tunnel_port,
                gue.tunnel_flags
            ),
            (
                ForwardMethod::Tunnel,
                TunnelType::Gue,
                6080,
                TunnelFlags::CSUM
            )
        );

        let mh = ipvs.service(&ServiceKey::udp(ip("fd00::1"), 53)).unwrap();
        assert_eq!(mh.scheduler, Scheduler::Maglev);
        assert_eq!(
            mh.flags - ServiceFlags::HASHED,
            ServiceFlags::MH_PORT | ServiceFlags::ONE_PACKET
        );
        assert_eq!(mh.netmask, 128);
        let route = &ipvs.destinations(&mh.key).unwrap()[0];
        assert_eq!(
            (route.addr, route.forward, route.weight),
            (ip("fd00::2"), ForwardMethod::DirectRoute, 5)
        );

        let fwm = ipvs
            .service(&ServiceKey::Fwmark {
                family: AddressFamily::Inet6,
                mark: 9,
            })
            .unwrap();
        assert_eq!(fwm.scheduler, Scheduler::DestinationHashing);

        let sctp = ipvs
            .service(&ServiceKey::Inet {
                protocol: Protocol::Sctp,
                addr: ip("10.1.1.2"),
                port: 99,
            })
            .unwrap();
        assert_eq!(
            (sctp.scheduler.name(), sctp.timeout, sctp.pe_name.as_deref()),
            ("fo", 60, Some("sip"))
        );
        assert_eq!(ipvs.services().unwrap().len(), 4);
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn kernel_errors_carry_errno_object_and_advice() {
    let ns = node("err");
    ns.run(|| {
        let mut ipvs = ipvs();
        let key = ServiceKey::tcp(ip("10.1.0.1"), 80);
        ipvs.add_service(&Service::new(key, Scheduler::RoundRobin))
            .unwrap();

        let duplicate = ipvs
            .add_service(&Service::new(key, Scheduler::RoundRobin))
            .unwrap_err();
        assert_eq!(duplicate.errno(), Some(17), "{duplicate}");
        assert!(duplicate.is_already_exists());
        assert!(
            duplicate
                .to_string()
                .contains("add service TCP 10.1.0.1:80"),
            "{duplicate}"
        );
        assert!(
            duplicate.to_string().contains("edit it instead"),
            "{duplicate}"
        );

        let missing_key = ServiceKey::tcp(ip("10.1.0.2"), 80);
        for missing in [
            ipvs.delete_service(&missing_key).unwrap_err(),
            ipvs.service(&missing_key).unwrap_err(),
            ipvs.add_destination(
                &missing_key,
                &Destination::new(ip("10.2.0.1"), 80, ForwardMethod::Masquerade),
            )
            .unwrap_err(),
        ] {
            assert_eq!(missing.errno(), Some(3), "{missing}");
            assert!(missing.is_not_found());
            assert!(missing.to_string().contains("TCP 10.1.0.2:80"), "{missing}");
            assert!(
                missing.to_string().contains("service does not exist"),
                "{missing}"
            );
        }

        let bad = ipvs
            .add_service(&Service::new(
                ServiceKey::tcp(ip("10.1.0.3"), 80),
                Scheduler::Other("nosuch".into()),
            ))
            .unwrap_err();
        assert_eq!(bad.errno(), Some(2), "{bad}");
        assert!(bad.to_string().contains("modprobe ip_vs_<name>"), "{bad}");

        let too_long = ipvs
            .add_service(&Service::new(
                ServiceKey::tcp(ip("10.1.0.3"), 80),
                Scheduler::Other("x".repeat(40)),
            ))
            .unwrap_err();
        assert!(matches!(too_long, Error::InvalidInput { .. }), "{too_long}");

        let dest = Destination::new(ip("10.2.0.1"), 8080, ForwardMethod::Masquerade);
        ipvs.add_destination(&key, &dest).unwrap();
        let dup_dest = ipvs.add_destination(&key, &dest).unwrap_err();
        assert_eq!(dup_dest.errno(), Some(17), "{dup_dest}");
        let gone = ipvs
            .delete_destination(
                &key,
                &DestinationKey {
                    addr: ip("10.2.0.9"),
                    port: 1,
                },
            )
            .unwrap_err();
        assert_eq!(gone.errno(), Some(2), "{gone}");
        assert!(gone.is_not_found());
        assert!(
            gone.to_string().contains("TCP 10.1.0.1:80 -> 10.2.0.9:1"),
            "{gone}"
        );

        // An address family the kernel does not know.
        let mut attrs = key_attributes(&ServiceKey::tcp(ip("10.1.0.5"), 80));
        attrs[0] = ServiceAttribute::AddressFamily(99);
        attrs.extend([
            ServiceAttribute::Scheduler("rr".into()),
            ServiceAttribute::Flags { flags: 0, mask: !0 },
            ServiceAttribute::Timeout(0),
            ServiceAttribute::Netmask([255; 4]),
        ]);
        let unknown_family = ipvs
            .execute(
                Request {
                    message: IpvsMessage::new(
                        IPVS_CMD_NEW_SERVICE,
                        vec![Attribute::Service(attrs)],
                    ),
                    operation: Operation::AddService,
                    object: "AF 99 service".into(),
                },
                false,
            )
            .unwrap_err();
        assert_eq!(unknown_family.errno(), Some(97), "{unknown_family}");
        assert!(
            unknown_family.to_string().contains("address family"),
            "{unknown_family}"
        );
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn batch_applies_thousands_of_changes_in_few_sendmsgs_and_reports_each_failure() {
    let ns = node("batch");
    ns.run(|| {
        let mut ipvs = ipvs();
        let mut changes = Vec::new();
        for i in 0..2000u32 {
            let key = ServiceKey::tcp(ip(&format!("10.3.{}.{}", i / 250, i % 250 + 1)), 80);
            changes.push(Change::AddService(Service::new(key, Scheduler::RoundRobin)));
            for d in 0..2u32 {
                changes.push(Change::AddDestination(
                    key,
                    Destination::new(
                        ip(&format!("10.4.{}.{}", i / 250, i % 250 + 1)),
                        8000 + d as u16,
                        ForwardMethod::Masquerade,
                    ),
                ));
            }
        }
        let dup_at = 3000;
        changes.insert(dup_at, changes[0].clone());
        let missing_at = 4500;
        changes.insert(
            missing_at,
            Change::DeleteService(ServiceKey::tcp(ip("10.9.9.9"), 1)),
        );
        let invalid_at = 5000;
        let mut invalid = Service::new(ServiceKey::tcp(ip("10.9.9.8"), 1), Scheduler::RoundRobin);
        invalid.netmask = 40;
        changes.insert(invalid_at, Change::AddService(invalid));

        let before = ipvs.sendmsg_count();
        let results = ipvs.apply_batch(&changes).unwrap();
        let sends = ipvs.sendmsg_count() - before;
        assert_eq!(results.len(), changes.len());
        for (i, result) in results.iter().enumerate() {
            match i {
                _ if i == dup_at => assert_eq!(result.as_ref().unwrap_err().errno(), Some(17)),
                _ if i == missing_at => assert_eq!(result.as_ref().unwrap_err().errno(), Some(3)),
                _ if i == invalid_at => {
                    assert!(
                        matches!(result, Err(Error::InvalidInput { .. })),
                        "{result:?}"
                    )
                }
                _ => assert!(result.is_ok(), "change {i}: {result:?}"),
            }
        }
        assert!(
            sends <= 20,
            "{} changes took {sends} sendmsg calls",
            changes.len()
        );
        let all = ipvs.services_with_destinations().unwrap();
        assert_eq!(all.len(), 2000);
        assert!(all.iter().all(|(_, d)| d.len() == 2));

        // Deleting in one batch.
        let deletes: Vec<_> = all
            .iter()
            .map(|(s, _)| Change::DeleteService(s.key))
            .collect();
        assert!(
            ipvs.apply_batch(&deletes)
                .unwrap()
                .iter()
                .all(Result::is_ok)
        );
        assert!(ipvs.services().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn counters_follow_real_traffic_like_ipvsadm_stats() {
    let client = Netns::new("client");
    let node = Netns::new("node");
    let backend = Netns::new("backend");
    veth(
        &client,
        "eth0",
        "192.168.50.2/24",
        &node,
        "to-client",
        "192.168.50.1/24",
    );
    veth(
        &node,
        "to-pod",
        "10.244.0.1/24",
        &backend,
        "eth0",
        "10.244.0.10/24",
    );
    client.sh("ip route add default via 192.168.50.1");
    backend.sh("ip route add default via 10.244.0.1");
    node.sh("sysctl -qw net.ipv4.ip_forward=1; ip link add kube-ipvs0 type dummy; ip addr add 10.96.0.20/32 dev kube-ipvs0");
    let key = ServiceKey::tcp(ip("10.96.0.20"), 80);
    node.run(|| {
        let mut ipvs = ipvs();
        ipvs.add_service(&Service::new(key, Scheduler::RoundRobin))
            .unwrap();
        ipvs.add_destination(
            &key,
            &Destination::new(ip("10.244.0.10"), 8080, ForwardMethod::Masquerade),
        )
        .unwrap();
    });
    let _server = backend.http_server(8080, "hello");
    for _ in 0..3 {
        assert_eq!(
            client
                .sh("curl -sS --max-time 10 http://10.96.0.20/")
                .trim(),
            "hello"
        );
    }
    let read = || {
        node.run(|| {
            let mut ipvs = ipvs();
            let service = ipvs.service(&key).unwrap();
            let dest = ipvs.destinations(&key).unwrap().remove(0);
            (service.stats, dest.stats)
        })
    };
    // The kernel folds its per-CPU counters into what it reports every two seconds.
    assert!(
        wait_until(Duration::from_secs(10), || read().0.connections == 3),
        "{:?}",
        read()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (service, dest) = read();
    assert_eq!(service.connections, 3, "{service:?}");
    assert_eq!(dest.connections, 3, "{dest:?}");
    assert!(
        service.in_packets >= 9 && service.out_packets >= 6,
        "{service:?}"
    );
    assert!(service.in_bytes > 0 && service.out_bytes > 0, "{service:?}");

    let table = node.sh("ipvsadm -Ln --stats --exact -t 10.96.0.20:80");
    let line = table.lines().find(|l| l.starts_with("TCP")).unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![
            service.connections,
            service.in_packets,
            service.out_packets,
            service.in_bytes,
            service.out_bytes
        ],
        "{table}"
    );

    // Rates are estimated every two seconds; they become non-zero after traffic.
    assert!(
        service.in_packet_rate > 0 || service.in_byte_rate > 0,
        "{service:?}"
    );

    node.run(|| ipvs().zero(Some(&key)).unwrap());
    let (service, dest) = read();
    assert_eq!(
        (service.connections, service.in_packets, dest.connections),
        (0, 0, 0)
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn info_timeouts_zero_and_flush() {
    let ns = node("glob");
    ns.run(|| {
        let mut ipvs = ipvs();
        let info = ipvs.info().unwrap();
        assert_eq!(info.version_string(), "1.2.1");
        assert!(info.conn_table_size >= 256, "{info:?}");
        ipvs.set_timeouts(&Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 301,
        })
        .unwrap();
        assert_eq!(
            ipvs.timeouts().unwrap(),
            Timeouts {
                tcp: 901,
                tcp_fin: 121,
                udp: 301
            }
        );
        ipvs.set_timeouts(&Timeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 45,
        })
        .unwrap();
        assert_eq!(
            ipvs.timeouts().unwrap(),
            Timeouts {
                tcp: 901,
                tcp_fin: 121,
                udp: 45
            }
        );
        ipvs.add_service(&Service::new(
            ServiceKey::tcp(ip("10.1.0.1"), 80),
            Scheduler::RoundRobin,
        ))
        .unwrap();
        ipvs.zero(None).unwrap();
    });
    assert_eq!(
        ns.sh("ipvsadm -L --timeout").trim(),
        "Timeout (tcp tcpfin udp): 901 121 45"
    );
    let header = ns.sh("ipvsadm -Ln");
    ns.run(|| {
        let mut ipvs = ipvs();
        let info = ipvs.info().unwrap();
        assert!(
            header.starts_with(&format!(
                "IP Virtual Server version {} (size={})",
                info.version_string(),
                info.conn_table_size
            )),
            "{header}"
        );
        ipvs.flush().unwrap();
        assert!(ipvs.services().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn async_handle_batches_lists_and_edits() {
    let ns = node("async");
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut ipvs = AsyncIpvsHandle::new().await.unwrap();
            // The other mode: one acknowledgement per change.
            ipvs.set_ack_every_change(true);
            let key = ServiceKey::udp(ip("fd00::10"), 53);
            let mut service = Service::new(key, Scheduler::WeightedRoundRobin);
            let changes = vec![
                Change::AddService(service.clone()),
                Change::AddDestination(
                    key,
                    Destination::new(ip("fd00::11"), 53, ForwardMethod::Masquerade).weight(2),
                ),
                Change::AddDestination(
                    key,
                    Destination::new(ip("fd00::12"), 53, ForwardMethod::Masquerade).weight(3),
                ),
                Change::AddService(service.clone()),
            ];
            let results = ipvs.apply_batch(&changes).await.unwrap();
            assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
            assert!(results[3].as_ref().unwrap_err().is_already_exists());

            service.scheduler = Scheduler::SourceHashing;
            service.flags = ServiceFlags::SH_PORT;
            ipvs.edit_service(&service).await.unwrap();
            let mut dest =
                Destination::new(ip("fd00::11"), 53, ForwardMethod::Masquerade).weight(9);
            dest.upper_threshold = 50;
            ipvs.edit_destination(&key, &dest).await.unwrap();
            ipvs.delete_destination(
                &key,
                &DestinationKey {
                    addr: ip("fd00::12"),
                    port: 53,
                },
            )
            .await
            .unwrap();

            let got = ipvs.service(&key).await.unwrap();
            assert_eq!(
                (got.scheduler.clone(), got.flags - ServiceFlags::HASHED),
                (Scheduler::SourceHashing, ServiceFlags::SH_PORT)
            );
            let dests = ipvs.destinations(&key).await.unwrap();
            assert_eq!(dests.len(), 1);
            assert_eq!((dests[0].weight, dests[0].upper_threshold), (9, 50));
            assert_eq!(ipvs.info().await.unwrap().version_string(), "1.2.1");
            ipvs.delete_service(&key).await.unwrap();
            assert!(ipvs.services().await.unwrap().is_empty());
        });
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn sync_daemons_started_by_ipvsadm_are_listed() {
    let ns = node("daemon");
    ns.run(|| assert_eq!(ipvs().daemons().unwrap(), []));
    ns.sh("ipvsadm --start-daemon backup --mcast-interface lo --syncid 9 --mcast-port 9100 --mcast-ttl 2");
    // The kernel derives a backup's maxlen from the interface MTU: take ipvsadm's word.
    let listed = ns.sh("ipvsadm -L --daemon");
    let max_len: u16 = listed
        .split(", maxlen=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no maxlen in {listed:?}"));
    ns.run(|| {
        assert_eq!(
            ipvs().daemons().unwrap(),
            [SyncDaemon {
                role: SyncRole::Backup,
                mcast_interface: "lo".into(),
                sync_id: 9,
                sync_max_len: Some(max_len),
                mcast_group: Some(ip("224.0.0.81")),
                mcast_port: Some(9100),
                mcast_ttl: Some(2),
            }]
        )
    });
    ns.sh("ipvsadm --start-daemon master --mcast-interface d0 --syncid 3");
    ns.run(|| {
        let daemons = ipvs().daemons().unwrap();
        let roles: Vec<(SyncRole, &str, u32)> = daemons
            .iter()
            .map(|d| (d.role, d.mcast_interface.as_str(), d.sync_id))
            .collect();
        assert_eq!(
            roles,
            [(SyncRole::Master, "d0", 3), (SyncRole::Backup, "lo", 9)]
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let from_async = runtime.block_on(async {
            AsyncIpvsHandle::new()
                .await
                .unwrap()
                .daemons()
                .await
                .unwrap()
        });
        assert_eq!(from_async, daemons);
    });
    ns.sh("ipvsadm --stop-daemon master && ipvsadm --stop-daemon backup");
    ns.run(|| assert_eq!(ipvs().daemons().unwrap(), []));
}
