//! Generational slab: O(1) insert/remove, keys that go stale instead of aliasing.
//!
//! A [`Key`] names a slot *and* the generation it was issued for, so a key that comes back from
//! the wire (inside a Via branch or a Record-Route parameter) after its entry was removed and the
//! slot reused finds nothing rather than somebody else's call.

use std::fmt;

/// Handle to an entry: slot index plus the generation it was issued for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Slot index.
    pub index: u32,
    /// Generation of the slot when the entry was inserted.
    pub generation: u32,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

/// One slot: its state, aligned to a cache line. The state's explicit tag (`repr(u32)`: no niche
/// in `T`, which the compiler may put anywhere in a nine-line `Call`) and its generation come
/// first, in the line where the value begins, so a lookup with a key reads that line alone, not
/// also the slot's last one and the line of a niche (an expiry that finds its call 32 s after it
/// was last touched pays for every line it reads).
#[repr(C, align(64))]
struct Slot<T> {
    state: State<T>,
}

#[repr(u32)]
enum State<T> {
    Occupied { generation: u32, value: T },
    Vacant { generation: u32, next_free: u32 },
}

const NO_FREE: u32 = u32::MAX;

/// A slab of `T` addressed by generational [`Key`]s.
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free_head: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free_head: NO_FREE,
            len: 0,
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> Key {
        self.insert_with(|_| value)
    }

    /// Stores the value `make` builds from its own key (entries that embed their key).
    pub fn insert_with(&mut self, make: impl FnOnce(Key) -> T) -> Key {
        self.len += 1;
        if self.free_head != NO_FREE {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            let State::Vacant {
                generation,
                next_free,
            } = slot.state
            else {
                unreachable!("invariant: free list points at vacant slots")
            };
            let key = Key { index, generation };
            self.free_head = next_free;
            slot.state = State::Occupied {
                generation,
                value: make(key),
            };
            key
        } else {
            let index = u32::try_from(self.slots.len()).expect("invariant: fewer than 2^32 slots");
            let key = Key {
                index,
                generation: 0,
            };
            self.slots.push(Slot {
                state: State::Occupied {
                    generation: 0,
                    value: make(key),
                },
            });
            key
        }
    }

    /// The entry for `key`, if it is still live.
    pub fn get(&self, key: Key) -> Option<&T> {
        match &self.slots.get(key.index as usize)?.state {
            State::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// The entry for `key`, mutably, if it is still live.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match &mut self.slots.get_mut(key.index as usize)?.state {
            State::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// The vacant state that replaces the live entry of `key`, if `key` is live.
    fn vacate(&mut self, key: Key) -> Option<State<T>> {
        match self.slots.get(key.index as usize)?.state {
            State::Occupied { generation, .. } if generation == key.generation => {
                let next = State::Vacant {
                    generation: generation.wrapping_add(1),
                    next_free: self.free_head,
                };
                self.free_head = key.index;
                self.len -= 1;
                Some(next)
            }
            _ => None,
        }
    }

    /// Removes and returns the entry for `key`; stale keys remove nothing.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let next = self.vacate(key)?;
        let slot = &mut self.slots[key.index as usize];
        let State::Occupied { value, .. } = std::mem::replace(&mut slot.state, next) else {
            unreachable!("invariant: vacate checked the slot is occupied")
        };
        Some(value)
    }

    /// Removes the entry for `key` and drops it where it lies: unlike [`Self::remove`], nothing
    /// is moved out, so only the lines of the value that its destructor reads are touched.
    /// Returns false for a stale key.
    pub fn free(&mut self, key: Key) -> bool {
        let Some(next) = self.vacate(key) else {
            return false;
        };
        self.slots[key.index as usize].state = next;
        true
    }

    /// Every live entry with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.state {
                State::Occupied { generation, value } => Some((
                    Key {
                        index: i as u32,
                        generation: *generation,
                    },
                    value,
                )),
                State::Vacant { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing_after_reuse() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(b.index, a.index, "slot is reused");
        assert_ne!(b.generation, a.generation);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn out_of_range_keys_are_harmless() {
        let mut s: Slab<u8> = Slab::new();
        let bogus = Key {
            index: 7,
            generation: 0,
        };
        assert!(s.get(bogus).is_none());
        assert!(s.get_mut(bogus).is_none());
        assert!(s.remove(bogus).is_none());
    }

    #[test]
    fn free_drops_in_place_and_stales_the_key() {
        let mut s = Slab::new();
        let a = s.insert(String::from("a"));
        let b = s.insert(String::from("b"));
        assert!(s.free(a));
        assert!(!s.free(a), "a stale key frees nothing");
        assert_eq!(s.get(a), None);
        assert_eq!(s.len(), 1);
        let c = s.insert(String::from("c"));
        assert_eq!(c.index, a.index, "the freed slot is reused");
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c).map(String::as_str), Some("c"));
        assert_eq!(s.remove(b).as_deref(), Some("b"));
        assert_eq!(s.iter().count(), 1);
    }

    #[test]
    fn insert_with_sees_its_own_key() {
        let mut s = Slab::new();
        let k = s.insert_with(|k| k);
        assert_eq!(s.get(k), Some(&k));
        assert_eq!(s.iter().count(), 1);
    }
}
