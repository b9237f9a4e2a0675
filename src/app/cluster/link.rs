//! A shard's side of the cluster directory: hands the newest directory snapshot to its core
//! (one atomic load per datagram, no lock) and reports which of its extensions gained their
//! first or lost their last binding.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Change, Shared};
use crate::core::cluster::Directory;
use crate::core::persist::PersistOp;
use crate::core::registrar::binding::key_extension;
use crate::core::Core;

/// Held by each shard when `[cluster]` is configured.
pub struct ShardLink {
    shared: Arc<Shared>,
    current: Option<Arc<Directory>>,
    /// This shard's extensions with at least one live binding.
    present: HashSet<Box<[u8]>>,
    touched: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for ShardLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLink")
            .field("present", &self.present.len())
            .finish_non_exhaustive()
    }
}

impl ShardLink {
    /// A link for a shard whose core holds its restored bindings: reports them all.
    pub fn new(shared: Arc<Shared>, core: &Core) -> Self {
        let mut numbers = HashSet::new();
        core.for_each_binding_record(|key, _| {
            if let Some(n) = key_extension(key) {
                numbers.insert(Box::<[u8]>::from(n));
            }
        });
        let mut link = Self {
            shared,
            current: None,
            present: HashSet::new(),
            touched: numbers.into_iter().collect(),
        };
        link.report(core);
        link
    }

    /// Before a datagram: installs a newer snapshot, if the directory thread published one.
    pub fn refresh(&mut self, core: &mut Core) {
        let latest = self.shared.directory.load();
        if self
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &latest))
        {
            return;
        }
        let latest = arc_swap::Guard::into_inner(latest);
        self.current = Some(Arc::clone(&latest));
        core.set_directory(latest);
    }

    /// After a batch, before the core's journal operations are drained: notes the extensions
    /// they touch.
    pub fn note(&mut self, op: PersistOp<'_>) {
        let key = match op {
            PersistOp::Put { key, .. } | PersistOp::Delete { key } => key,
        };
        if let Some(n) = key_extension(key) {
            self.touched.push(n.into());
        }
    }

    /// Sends a change for every touched extension whose presence changed.
    pub fn report(&mut self, core: &Core) {
        for number in self.touched.drain(..) {
            let present = core.targets(&number).next().is_some();
            let changed = if present {
                self.present.insert(number.clone())
            } else {
                self.present.remove(&number)
            };
            if changed {
                self.shared.changes.push(Change { number, present });
            }
        }
    }
}
