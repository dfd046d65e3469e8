//! Every entry (waiting acquire or hold) by its id.
//!
//! A hash table of boxed entries that carry their own id: a slot is one pointer (8 bytes plus
//! a control byte) instead of an id and a pointer (24 plus one). Right after the table grows
//! half its slots are empty, so the slot size counts about twice per entry.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::ids::HoldId;

use super::{Entry, IdHasher};

#[derive(Debug, Default)]
pub(crate) struct Entries(HashTable<Box<Entry>>);

fn hash(id: &HoldId) -> u64 {
    std::hash::BuildHasherDefault::<IdHasher>::default().hash_one(id)
}

impl Entries {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional, |entry| hash(&entry.id));
    }

    pub(crate) fn get(&self, id: &HoldId) -> Option<&Entry> {
        self.0.find(hash(id), |entry| entry.id == *id).map(|entry| &**entry)
    }

    pub(crate) fn get_mut(&mut self, id: &HoldId) -> Option<&mut Entry> {
        self.0.find_mut(hash(id), |entry| entry.id == *id).map(|entry| &mut **entry)
    }

    pub(crate) fn contains_key(&self, id: &HoldId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `entry` under its id, which must not be present (the table refuses duplicates).
    pub(crate) fn insert(&mut self, entry: Box<Entry>) {
        debug_assert!(!self.contains_key(&entry.id), "duplicate entry id");
        self.0.insert_unique(hash(&entry.id), entry, |entry| hash(&entry.id));
    }

    pub(crate) fn remove(&mut self, id: &HoldId) -> Option<Box<Entry>> {
        let found = self.0.find_entry(hash(id), |entry| entry.id == *id).ok()?;
        Some(found.remove().0)
    }

    /// Every entry, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter().map(|entry| &**entry)
    }
}

impl std::ops::Index<&HoldId> for Entries {
    type Output = Entry;

    fn index(&self, id: &HoldId) -> &Entry {
        self.get(id).expect("an entry the table knows")
    }
}
