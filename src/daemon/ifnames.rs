//! Interface indexes (as NFQUEUE reports them) to names (as rules files name them).

use std::collections::HashMap;

use crate::policy::IfaceName;

/// A cache of `if_indextoname` answers. Cleared on a rules reload, so a renamed or recreated
/// interface is looked up again then.
#[derive(Debug, Default)]
pub struct IfNames {
    names: HashMap<u32, Option<IfaceName>>,
}

impl IfNames {
    /// The name of interface `index`; `None` for index 0 (unknown) or a vanished interface.
    pub fn get(&mut self, index: u32) -> Option<IfaceName> {
        if index == 0 {
            return None;
        }
        if let Some(name) = self.names.get(&index) {
            return *name;
        }
        let name = nix::net::if_::if_indextoname(index)
            .ok()
            .and_then(|name| name.to_str().ok().and_then(IfaceName::new));
        // Bounded: a router has a few interfaces; a churn of short-lived ones resets the cache.
        if self.names.len() >= 4096 {
            self.names.clear();
        }
        self.names.insert(index, name);
        name
    }

    /// Forgets every name.
    pub fn clear(&mut self) {
        self.names.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_zero_is_unknown() {
        let mut names = IfNames::default();
        assert_eq!(names.get(0), None);
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(names.get(lo).map(|n| n.to_string()), Some("lo".to_owned()));
        assert_eq!(names.get(u32::MAX), None);
    }
}
