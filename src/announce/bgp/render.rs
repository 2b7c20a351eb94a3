//! The `ipvs-proxy bgp` report: one line per neighbour, like `birdc show protocols`
//! and `vtysh show bgp summary`, then the last error of each neighbour that has one.

use std::fmt::Write as _;

use super::{BfdState, NeighborStatus};

/// `3d04h`, `01:02:03` or `never`-style durations as routers print them.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The text report of `neighbors` (in the order given).
pub fn render_text(neighbors: &[NeighborStatus]) -> String {
    if neighbors.is_empty() {
        return "No BGP neighbors configured for this node.\n".to_string();
    }
    let rows: Vec<[String; 8]> = neighbors
        .iter()
        .map(|n| {
            let address = match n.address {
                std::net::IpAddr::V6(_) if n.port != 179 => format!("[{}]:{}", n.address, n.port),
                _ if n.port != 179 => format!("{}:{}", n.address, n.port),
                _ => n.address.to_string(),
            };
            [
                n.name.clone(),
                address,
                n.local_as.to_string(),
                n.peer_as.map_or_else(|| "?".to_string(), |a| a.to_string()),
                format!(
                    "{}{}",
                    n.state,
                    if n.graceful_restart { " (GR)" } else { "" }
                ),
                duration(n.since_secs),
                n.prefixes_sent.to_string(),
                match n.bfd {
                    BfdState::None => "-".to_string(),
                    BfdState::Down => "down".to_string(),
                    BfdState::Up => "up".to_string(),
                },
            ]
        })
        .collect();
    let header = [
        "Neighbor", "Address", "LocalAS", "AS", "State", "Up/Down", "PfxSnt", "BFD",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, as routers print them.
            if matches!(i, 2 | 3 | 6) {
                let _ = write!(text, "{cell:>w$}  ");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    let errors: Vec<&NeighborStatus> = neighbors
        .iter()
        .filter(|n| n.last_error.is_some())
        .collect();
    if !errors.is_empty() {
        out.push('\n');
        for n in errors {
            let _ = writeln!(
                out,
                "{}: last error: {}",
                n.name,
                n.last_error.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::SessionState;
    use super::*;

    fn neighbor(name: &str, address: &str, state: SessionState) -> NeighborStatus {
        NeighborStatus {
            name: name.into(),
            address: address.parse().unwrap(),
            port: 179,
            local_as: 64512,
            peer_as: Some(64513),
            state,
            since_secs: 3723,
            prefixes_sent: 3,
            updates_sent: 5,
            graceful_restart: false,
            bfd: BfdState::None,
            last_error: None,
        }
    }

    #[test]
    fn neighbours_render_as_an_aligned_table_with_errors_below() {
        let mut up = neighbor("router-a", "10.0.0.1", SessionState::Established);
        up.graceful_restart = true;
        up.bfd = BfdState::Up;
        let mut down = neighbor("router-b-long-name", "fd00::1", SessionState::Active);
        down.port = 1179;
        down.peer_as = None;
        down.prefixes_sent = 0;
        down.since_secs = 2 * 86400 + 5 * 3600;
        down.bfd = BfdState::Down;
        down.last_error = Some("cannot connect to [fd00::1]:1179: refused".into());
        let text = render_text(&[up, down]);
        let expected = "\
Neighbor            Address         LocalAS     AS  State             Up/Down   PfxSnt  BFD
router-a            10.0.0.1          64512  64513  Established (GR)  01:02:03       3  up
router-b-long-name  [fd00::1]:1179    64512      ?  Active            2d05h          0  down

router-b-long-name: last error: cannot connect to [fd00::1]:1179: refused
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn no_neighbours_says_so() {
        assert_eq!(
            render_text(&[]),
            "No BGP neighbors configured for this node.\n"
        );
    }
}
