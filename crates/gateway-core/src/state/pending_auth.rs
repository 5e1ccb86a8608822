//! Caps on connections that are upgraded but not yet authenticated (`maxPendingAuth`,
//! `maxPendingAuthPerIp`): each costs memory and may call the validator, so a client
//! cannot open them at will. A slot is held from the upgrade until auth ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::link::lock;

pub struct PendingAuth {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Total,
    PerIp,
}

/// One pending connection's place; given back when dropped.
pub struct AuthSlot {
    owner: Arc<PendingAuth>,
    /// The address counted against `max_per_ip`, unless exempt.
    ip: Option<IpAddr>,
}

impl PendingAuth {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    /// Takes a slot for a connection from `ip`. `per_ip` is false for addresses exempt
    /// from the per-address cap (loopback without `trustProxy`: a local reverse proxy
    /// would otherwise cap every extension together).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, per_ip: bool) -> Result<AuthSlot, Full> {
        let mut counts = lock(&self.counts);
        if counts.total >= self.max_total {
            return Err(Full::Total);
        }
        if per_ip {
            let n = counts.per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(Full::PerIp);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(AuthSlot {
            owner: self.clone(),
            ip: per_ip.then_some(ip),
        })
    }
}

impl Drop for AuthSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.owner.counts);
        counts.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_address_and_gives_back_on_drop() {
        let pending = PendingAuth::new(3, 2);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let first = pending.admit(a, true).unwrap();
        let _second = pending.admit(a, true).unwrap();
        assert_eq!(pending.admit(a, true).err(), Some(Full::PerIp));
        let _third = pending.admit(b, true).unwrap();
        assert_eq!(pending.admit(b, true).err(), Some(Full::Total));
        drop(first);
        assert_eq!(lock(&pending.counts).total, 2);
        let _again = pending.admit(a, true).unwrap();
        assert_eq!(lock(&pending.counts).per_ip.len(), 2);
    }

    #[test]
    fn exempt_addresses_count_only_in_total() {
        let pending = PendingAuth::new(10, 1);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..5)
            .map(|_| pending.admit(local, false).unwrap())
            .collect();
        assert_eq!(lock(&pending.counts).total, 5);
        drop(slots);
        assert_eq!(lock(&pending.counts).total, 0);
        assert!(lock(&pending.counts).per_ip.is_empty());
    }
}
