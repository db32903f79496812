//! The endpoints FusionAuth lets `apiKey.permissions` name, from FusionAuth's
//! generated list (data/fusionauth-api-endpoints.tsv), so keys.toml is
//! checked before anything is minted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// One endpoint: its methods, and whether a tenant-scoped key may call it.
#[derive(Debug)]
pub struct Endpoint {
    pub methods: BTreeSet<String>,
    pub tenant: bool,
}

const TSV: &str = include_str!("../data/fusionauth-api-endpoints.tsv");

/// Every endpoint by its path.
pub fn endpoints() -> &'static BTreeMap<String, Endpoint> {
    static ENDPOINTS: OnceLock<BTreeMap<String, Endpoint>> = OnceLock::new();
    ENDPOINTS.get_or_init(|| {
        TSV.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let path = cols.next()?;
                let methods = cols.next()?.split(',').map(str::to_owned).collect();
                let tenant = cols.next()? == "tenant";
                Some((path.to_owned(), Endpoint { methods, tenant }))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_loaded() {
        let e = endpoints();
        assert!(e.len() > 100);
        assert!(e["/api/status"].methods.contains("GET"));
        assert!(!e["/api/status"].tenant);
        assert!(e["/api/system/version"].tenant);
        assert!(!e.contains_key("/api/api-key"));
    }
}
