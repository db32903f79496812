//! The endpoint strings an API key's permissions may name, from FusionAuth's
//! generated `api-endpoints.json` (a copy of `shared/fusionauth/api-endpoints.tsv`,
//! so the crate builds on its own; a test keeps the two equal).

use std::sync::OnceLock;

/// The copied table, compiled in.
pub(crate) const TSV: &str = include_str!("../data/api-endpoints.tsv");

/// The HTTP methods an endpoint permission may list (the OpenAPI enum).
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub methods: Vec<String>,
    /// `false` for endpoints classified "global": a tenant-scoped request gets 401.
    pub tenant: bool,
}

/// Every endpoint of the table, in file order.
pub fn all() -> &'static [Endpoint] {
    static TABLE: OnceLock<Vec<Endpoint>> = OnceLock::new();
    TABLE.get_or_init(|| parse_table(TSV))
}

/// Parses a table in the format of `api-endpoints.tsv`.
pub fn parse_table(tsv: &str) -> Vec<Endpoint> {
    tsv.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .skip(1) // the header row
        .map(|line| {
            let mut cells = line.split('\t');
            let url = cells.next().unwrap_or_default().to_string();
            let methods = cells
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::to_string)
                .collect();
            let tenant = cells.next() == Some("tenant");
            Endpoint {
                url,
                methods,
                tenant,
            }
        })
        .collect()
}

/// The endpoint a request path falls under: the longest table entry that is
/// the path itself or a prefix of it ending at a `/`.
pub fn matching(path: &str) -> Option<&'static Endpoint> {
    all()
        .iter()
        .filter(|e| {
            path == e.url
                || path
                    .strip_prefix(e.url.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|e| e.url.len())
}

/// The table entry named exactly `url`.
pub fn named(url: &str) -> Option<&'static Endpoint> {
    all().iter().find(|e| e.url == url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_complete_and_classified() {
        let user = named("/api/user").unwrap();
        assert!(user.tenant);
        assert_eq!(user.methods, ["DELETE", "GET", "PATCH", "POST", "PUT"]);
        assert!(!named("/api/status").unwrap().tenant);
        assert!(named("/api/api-key").is_none());
        assert!(all().len() > 100);
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(matching("/api/user").unwrap().url, "/api/user");
        assert_eq!(matching("/api/user/123").unwrap().url, "/api/user");
        assert_eq!(
            matching("/api/user/search").unwrap().url,
            "/api/user/search"
        );
        assert_eq!(
            matching("/api/entity/type/1/permission").unwrap().url,
            "/api/entity/type"
        );
        assert!(matching("/api/username").is_none());
        assert!(matching("/api/nothing").is_none());
    }
}
