//! The names in use and their state, ordered by name (listing pages by cursor).
//!
//! Most names in use are an exclusive lock with one holder, no waiters and no lock-delay: for
//! those the map keeps only the holder's id and token, everything else about the name follows
//! from them. Any other state is boxed. A B-tree filled in ascending order keeps its nodes
//! about half full, so every byte of a slot counts about twice; this layout keeps a slot at 40
//! bytes and saves the box for the usual held lock.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::ops::RangeBounds;

use crate::ids::HoldId;
use crate::name::LockName;

use super::{Holders, NameKind, NameState};

#[derive(Debug)]
enum Slot {
    /// An exclusive lock held by `id`, granted with `token`; no waiters, no lock-delay.
    Held {
        id: HoldId,
        token: NonZeroU64,
    },
    State(Box<NameState>),
}

impl Slot {
    /// Stores the state as just its holder if it is an exclusive lock with one holder, no
    /// waiters and no lock-delay.
    fn compact(&mut self) {
        let Slot::State(state) = self else { return };
        let single = state.kind == NameKind::Lock
            && state.exclusive
            && state.queue.is_none()
            && state.delay_until == 0;
        let (Holders::One(id), Some(token)) = (&state.holders, NonZeroU64::new(state.last_token))
        else {
            return;
        };
        if single {
            *self = Slot::Held { id: *id, token };
        }
    }

    fn state(&self) -> Cow<'_, NameState> {
        match self {
            Slot::State(state) => Cow::Borrowed(state),
            Slot::Held { id, token } => Cow::Owned(NameState {
                kind: NameKind::Lock,
                used: 1,
                exclusive: true,
                last_token: token.get(),
                delay_until: 0,
                holders: Holders::One(*id),
                queue: None,
            }),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Names(BTreeMap<LockName, Slot>);

/// A name's state being changed (see [`Names::get_mut`]).
pub(crate) struct NameMut<'a>(&'a mut Slot);

impl std::ops::Deref for NameMut<'_> {
    type Target = NameState;

    fn deref(&self) -> &NameState {
        match &*self.0 {
            Slot::State(state) => state,
            Slot::Held { .. } => unreachable!("expanded by get_mut, compacted only on drop"),
        }
    }
}

impl std::ops::DerefMut for NameMut<'_> {
    fn deref_mut(&mut self) -> &mut NameState {
        match &mut *self.0 {
            Slot::State(state) => state,
            Slot::Held { .. } => unreachable!("expanded by get_mut, compacted only on drop"),
        }
    }
}

impl Drop for NameMut<'_> {
    fn drop(&mut self) {
        self.0.compact();
    }
}

impl Names {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn get<Q>(&self, name: &Q) -> Option<Cow<'_, NameState>>
    where
        LockName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get(name).map(Slot::state)
    }

    /// The table's own copy of the name (entries share it) and its state.
    pub(crate) fn get_key_value<Q>(&self, name: &Q) -> Option<(&LockName, Cow<'_, NameState>)>
    where
        LockName: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get_key_value(name).map(|(name, slot)| (name, slot.state()))
    }

    /// The state to change: a single holder's slot is expanded first, and stored compactly
    /// again (when it still can be) as the returned guard is dropped.
    pub(crate) fn get_mut(&mut self, name: &LockName) -> Option<NameMut<'_>> {
        let slot = self.0.get_mut(name)?;
        if let Slot::Held { .. } = slot {
            *slot = Slot::State(Box::new(slot.state().into_owned()));
        }
        Some(NameMut(slot))
    }

    /// Adds `name` with `state` unless it is in use; the state to change either way.
    pub(crate) fn get_or_insert(&mut self, name: &LockName, state: NameState) -> NameMut<'_> {
        if !self.0.contains_key(name) {
            self.0.insert(name.clone(), Slot::State(Box::new(state)));
        }
        self.get_mut(name).expect("present")
    }

    /// Adds `name` as an exclusive lock held by `id` with `token` (a new name's first grant).
    pub(crate) fn insert_held(&mut self, name: LockName, id: HoldId, token: u64) {
        let token = NonZeroU64::new(token).expect("tokens start at 1");
        let previous = self.0.insert(name, Slot::Held { id, token });
        debug_assert!(previous.is_none(), "the name was new");
    }

    pub(crate) fn insert(&mut self, name: LockName, state: NameState) {
        self.0.insert(name, Slot::State(Box::new(state)));
    }

    /// Forgets `name` if its state is just the single holder `id`: what ending that hold with no
    /// lock-delay leaves (nothing). Returns whether it did.
    pub(crate) fn remove_single(&mut self, name: &LockName, id: HoldId) -> bool {
        let single = matches!(self.0.get(name), Some(Slot::Held { id: held, .. }) if *held == id);
        if single {
            self.0.remove(name);
        }
        single
    }

    pub(crate) fn remove(&mut self, name: &LockName) {
        self.0.remove(name);
    }

    /// Puts every name's holders in the order `token_of` gives (after a restore).
    pub(crate) fn sort_holders(&mut self, token_of: impl Fn(&HoldId) -> Option<u64>) {
        for slot in self.0.values_mut() {
            if let Slot::State(state) = slot {
                if let Holders::Many(ids) = &mut state.holders {
                    ids.sort_by_key(|id| token_of(id));
                }
            }
        }
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&LockName, Cow<'_, NameState>)> {
        self.0.iter().map(|(name, slot)| (name, slot.state()))
    }

    pub(crate) fn range<Q, R>(
        &self,
        range: R,
    ) -> impl Iterator<Item = (&LockName, Cow<'_, NameState>)>
    where
        LockName: Borrow<Q>,
        Q: Ord + ?Sized,
        R: RangeBounds<Q>,
    {
        self.0.range::<Q, R>(range).map(|(name, slot)| (name, slot.state()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_exclusive_holder_is_kept_as_its_id_and_token_and_reads_back_the_same() {
        let name = LockName::new("db").unwrap();
        let mut names = Names::default();
        let id = HoldId::from_u128(7);
        let mut state = names.get_or_insert(&name, NameState::new(NameKind::Lock));
        state.used = 1;
        state.exclusive = true;
        state.last_token = 42;
        state.holders.push(id);
        let before = format!("{:?}", *state);
        drop(state);
        assert!(matches!(names.0[&name], Slot::Held { .. }));
        assert_eq!(format!("{:?}", names.get(&name).unwrap()), before);
        // Changing it expands it; a state that is no longer a single holder stays expanded.
        names.get_mut(&name).unwrap().exclusive = false;
        assert!(matches!(names.0[&name], Slot::State(_)));
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }
}
