//! The tenancy tree (`[[tenants]]`, `[server] max_public_calls`) and the licensing report.
//!
//! Service provider > organization > user, any depth: each node may cap the public calls below
//! it, and a lower level may set more than its parent (overselling): the parent still caps the
//! sum. Node 0 is the server level; tenants follow in file order, each after its parent.

use std::collections::HashMap;

/// Deepest tenant chain (server level not counted); a cap keeps admission O(1).
pub const MAX_TENANT_DEPTH: usize = 8;

/// One level of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Unique name (`""` for the server level).
    pub name: String,
    /// Parent level (`None` for the server level; `Some(0)` directly under the server).
    pub parent: Option<usize>,
    /// Public calls allowed at once below this level (`None`: no limit here).
    pub max_public_calls: Option<u32>,
    /// May call forwarding reach external numbers (inherited down the tree).
    pub forward_external: bool,
    /// May follow-me end in voicemail (inherited down the tree).
    pub voicemail: bool,
}

/// The validated tree.
#[derive(Clone, Debug, Default)]
pub struct Tenancy {
    nodes: Vec<Tenant>,
    by_name: HashMap<String, usize>,
}

/// What the raw configuration says of one tenant (before validation).
pub(super) struct TenantSpec {
    pub name: String,
    pub parent: String,
    pub max_public_calls: Option<u32>,
    pub forward_external: Option<bool>,
    pub voicemail: Option<bool>,
}

/// Why a tree is refused, with the index of the offending `[[tenants]]` entry.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TreeError {
    EmptyName(usize),
    Duplicate(usize),
    UnknownParent(usize),
    TooDeep(usize),
}

impl Tenancy {
    /// Builds the tree under a server level capped at `server_limit`. Parents may be given in
    /// any order; cycles show up as unknown parents.
    pub(super) fn build(
        server_limit: Option<u32>,
        specs: Vec<TenantSpec>,
    ) -> Result<Tenancy, TreeError> {
        let mut t = Tenancy {
            nodes: vec![Tenant {
                name: String::new(),
                parent: None,
                max_public_calls: server_limit,
                forward_external: true,
                voicemail: true,
            }],
            by_name: HashMap::new(),
        };
        for (i, s) in specs.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(TreeError::EmptyName(i));
            }
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(TreeError::Duplicate(i));
            }
        }
        // Place each tenant once its parent is placed.
        let mut placed = vec![false; specs.len()];
        let mut spec_node = vec![0usize; specs.len()];
        loop {
            let mut progress = false;
            for (i, s) in specs.iter().enumerate() {
                if placed[i] {
                    continue;
                }
                let parent = if s.parent.is_empty() {
                    Some(0)
                } else {
                    specs
                        .iter()
                        .position(|o| o.name == s.parent)
                        .filter(|&p| placed[p])
                        .map(|p| spec_node[p])
                };
                let Some(parent) = parent else { continue };
                let inherited = &t.nodes[parent];
                let node = Tenant {
                    name: s.name.clone(),
                    parent: Some(parent),
                    max_public_calls: s.max_public_calls,
                    forward_external: s.forward_external.unwrap_or(inherited.forward_external)
                        && (parent == 0 || inherited.forward_external),
                    voicemail: s.voicemail.unwrap_or(inherited.voicemail)
                        && (parent == 0 || inherited.voicemail),
                };
                t.nodes.push(node);
                spec_node[i] = t.nodes.len() - 1;
                t.by_name.insert(s.name.clone(), t.nodes.len() - 1);
                placed[i] = true;
                progress = true;
                if t.path(t.nodes.len() - 1).count() > MAX_TENANT_DEPTH + 1 {
                    return Err(TreeError::TooDeep(i));
                }
            }
            if !progress {
                break;
            }
        }
        match placed.iter().position(|p| !p) {
            Some(i) => Err(TreeError::UnknownParent(i)),
            None => Ok(t),
        }
    }

    /// Levels in the tree, the server level included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no tenant is configured (only the server level).
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Level `i`.
    pub fn node(&self, i: usize) -> &Tenant {
        &self.nodes[i]
    }

    /// Every level, server level first.
    pub fn nodes(&self) -> &[Tenant] {
        &self.nodes
    }

    /// The level of tenant `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Level `i` and its ancestors up to the server level (at most `MAX_TENANT_DEPTH + 1`).
    pub fn path(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(i), |&n| self.nodes.get(n).and_then(|t| t.parent))
            .take(MAX_TENANT_DEPTH + 2)
    }

    /// The licensing report: channels billed per service provider (a top-level tenant): the limit
    /// of the highest level of its branch that sets one; where none does, the sum of the bills
    /// below; a branch with no limit anywhere is unlimited (`None`).
    pub fn licensing(&self) -> Vec<(String, Option<u64>)> {
        (1..self.nodes.len())
            .filter(|&i| self.nodes[i].parent == Some(0))
            .map(|i| (self.nodes[i].name.clone(), self.bill(i)))
            .collect()
    }

    /// The licensing report as JSON: `{"providers": [{"name": …, "channels": N | null}]}`.
    pub fn licensing_json(&self) -> serde_json::Value {
        let providers: Vec<serde_json::Value> = self
            .licensing()
            .into_iter()
            .map(|(name, channels)| serde_json::json!({ "name": name, "channels": channels }))
            .collect();
        serde_json::json!({ "providers": providers })
    }

    /// Tenant `i` as JSON for the operator: its limit, the live public calls and refusals
    /// counted on it (`live`, `refused` per level), and its children's names.
    pub fn tenant_json(&self, i: usize, live: &dyn Fn(usize) -> (u32, u64)) -> serde_json::Value {
        let t = &self.nodes[i];
        let (calls, refused) = live(i);
        let children: Vec<&str> = (1..self.nodes.len())
            .filter(|&c| self.nodes[c].parent == Some(i))
            .map(|c| self.nodes[c].name.as_str())
            .collect();
        serde_json::json!({
            "name": t.name,
            "parent": t.parent.filter(|&p| p != 0).map(|p| self.nodes[p].name.as_str()),
            "max_public_calls": t.max_public_calls,
            "public_calls": calls,
            "refused": refused,
            "forward_external": t.forward_external,
            "voicemail": t.voicemail,
            "children": children,
        })
    }

    fn bill(&self, i: usize) -> Option<u64> {
        if let Some(limit) = self.nodes[i].max_public_calls {
            return Some(u64::from(limit));
        }
        let children: Vec<usize> = (1..self.nodes.len())
            .filter(|&c| self.nodes[c].parent == Some(i))
            .collect();
        if children.is_empty() {
            return None;
        }
        children.into_iter().map(|c| self.bill(c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, parent: &str, limit: Option<u32>) -> TenantSpec {
        TenantSpec {
            name: name.into(),
            parent: parent.into(),
            max_public_calls: limit,
            forward_external: None,
            voicemail: None,
        }
    }

    #[test]
    fn the_seed_example_bills_200_and_500_without_the_provider_limit() {
        let users = |p: Option<u32>| {
            let mut v = vec![spec("acme", "", p)];
            for u in 1..=5 {
                v.push(spec(&format!("user-{u}"), "acme", Some(100)));
            }
            v
        };
        let t = Tenancy::build(None, users(Some(200))).unwrap();
        assert_eq!(t.licensing(), vec![("acme".to_owned(), Some(200))]);
        let t = Tenancy::build(None, users(None)).unwrap();
        assert_eq!(t.licensing(), vec![("acme".to_owned(), Some(500))]);
        let mut v = users(None);
        v.push(spec("free", "acme", None));
        let t = Tenancy::build(None, v).unwrap();
        assert_eq!(
            t.licensing(),
            vec![("acme".to_owned(), None)],
            "an unlimited branch"
        );
    }

    #[test]
    fn parents_in_any_order_paths_and_inheritance() {
        let mut child = spec("org", "sp", Some(5));
        child.forward_external = Some(true);
        let mut sp = spec("sp", "", None);
        sp.forward_external = Some(false);
        let t = Tenancy::build(Some(1000), vec![spec("user", "org", None), child, sp]).unwrap();
        let user = t.find("user").unwrap();
        let names: Vec<&str> = t.path(user).map(|i| t.node(i).name.as_str()).collect();
        assert_eq!(names, vec!["user", "org", "sp", ""]);
        assert!(
            !t.node(t.find("org").unwrap()).forward_external,
            "a parent's no wins"
        );
        assert!(!t.node(user).forward_external);
    }

    #[test]
    fn bad_trees_are_refused() {
        assert_eq!(
            Tenancy::build(None, vec![spec("a", "", None), spec("a", "", None)]).unwrap_err(),
            TreeError::Duplicate(1)
        );
        assert_eq!(
            Tenancy::build(None, vec![spec("a", "b", None), spec("b", "a", None)]).unwrap_err(),
            TreeError::UnknownParent(0)
        );
        assert_eq!(
            Tenancy::build(None, vec![spec(" ", "", None)]).unwrap_err(),
            TreeError::EmptyName(0)
        );
        let deep: Vec<TenantSpec> = (0..10)
            .map(|i| {
                spec(
                    &format!("t{i}"),
                    &if i == 0 {
                        String::new()
                    } else {
                        format!("t{}", i - 1)
                    },
                    None,
                )
            })
            .collect();
        assert!(matches!(
            Tenancy::build(None, deep),
            Err(TreeError::TooDeep(_))
        ));
    }
}
