//! Lock-free, intrusive, singly linked list (Linux's `llist`).
//!
//! Any number of CPUs may [`LlistHead::add`] concurrently; one consumer takes
//! the whole list at once with [`LlistHead::del_all`] and then owns the
//! detached chain. There is no single-node delete, so there is no ABA
//! problem.
//!
//! Ordering contract: everything a producer wrote before `add` (a csd's
//! `func`, `info` and flags) is visible to the consumer after the `del_all`
//! that returned the node: the successful add CAS is `Release`, the
//! `del_all` swap is `Acquire`, and because later adds are read-modify-writes
//! on the same word they continue the release sequence of earlier ones.

use core::ptr::{self, NonNull};

use super::sync::{AtomicPtr, Ordering};

/// A link embedded in a queued object.
#[repr(C)]
pub(crate) struct LlistNode {
    next: AtomicPtr<LlistNode>,
}

impl LlistNode {
    super::sync::const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                next: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// The next node of a detached chain.
    #[inline]
    pub(crate) fn next(&self) -> *mut LlistNode {
        // Relaxed: called only by the owner of a detached chain, after the
        // Acquire swap in `del_all` that pairs with the producers' Release
        // add CAS (which published this link).
        self.next.load(Ordering::Relaxed)
    }

    /// Relinks a node of a detached chain.
    #[inline]
    pub(crate) fn set_next(&self, next: *mut LlistNode) {
        // Relaxed: only the chain's owner writes it. A later producer that
        // re-adds this node first takes ownership through an Acquire (csd
        // lock wait, irq_work claim) that pairs with the Release by which
        // the owner gave the node up (csd unlock, irq_work PENDING clear).
        self.next.store(next, Ordering::Relaxed);
    }
}

/// The head of a list.
#[repr(C)]
pub(crate) struct LlistHead {
    first: AtomicPtr<LlistNode>,
}

impl LlistHead {
    super::sync::const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                first: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Pushes `node`; returns whether the list was empty before, i.e.
    /// whether the caller must kick the consumer (send the IPI).
    ///
    /// # Safety
    ///
    /// `node` must point to a live `LlistNode` that is on no list, and it
    /// must stay live and unmoved until the consumer that takes it with
    /// [`Self::del_all`] is done with it (for a csd: until it is unlocked).
    #[inline]
    pub(crate) unsafe fn add(&self, node: NonNull<LlistNode>) -> bool {
        // SAFETY: the caller guarantees `node` is live and that nobody else
        // touches it until it is on the list.
        let n = unsafe { node.as_ref() };
        // Relaxed: only a guess for the CAS below, which validates it.
        let mut first = self.first.load(Ordering::Relaxed);
        loop {
            n.set_next(first);
            // Release on success: pairs with the Acquire swap in `del_all`
            // on the consumer CPU, publishing `n.next` and everything the
            // producer wrote to the containing object before this call.
            // SeqCst rather than Release (the same locked instruction on
            // x86): a polling consumer's wake-up protocol orders a SeqCst
            // load after it (arch `poll_idle`). Relaxed on failure: nothing
            // was published; we retry.
            match self.first.compare_exchange_weak(
                first,
                node.as_ptr(),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                // The value seen is `first` itself; testing it rather than
                // `first` needs no copy of it across the compare-exchange.
                Ok(seen) => return seen.is_null(),
                Err(current) => first = current,
            }
        }
    }

    /// Takes the whole list, newest node first. The caller owns the chain.
    #[inline]
    pub(crate) fn del_all(&self) -> *mut LlistNode {
        // Acquire: pairs with the Release CAS in `add` of every node on the
        // chain (they form one release sequence on `first`). SeqCst rather
        // than Acquire (the same `xchg` on x86): a polling consumer orders
        // it after its SeqCst store that ends polling (arch `poll_idle`).
        self.first.swap(ptr::null_mut(), Ordering::SeqCst)
    }

    /// The head word's address, for a consumer that spins on it with plain
    /// loads (a hint, as [`Self::is_empty`]).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn word(&self) -> *const usize {
        self.first.as_ptr().cast::<usize>().cast_const()
    }

    /// Whether the list is empty right now (a hint: it can change at once).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // Relaxed: a hint only; whoever acts on a non-empty list calls
        // `del_all`, which is the Acquire.
        self.first.load(Ordering::Relaxed).is_null()
    }
}

/// Reverses a detached chain (newest-first from [`LlistHead::del_all`] into
/// FIFO order) and returns its new first node.
///
/// # Safety
///
/// `head` must be null or the start of a chain detached by `del_all` that the
/// caller owns: every node live, and no other CPU touching their links.
#[inline]
pub(crate) unsafe fn reverse_order(mut head: *mut LlistNode) -> *mut LlistNode {
    let mut reversed = ptr::null_mut();
    while let Some(node) = NonNull::new(head) {
        // SAFETY: the caller owns the live, detached chain `node` is on.
        let n = unsafe { node.as_ref() };
        head = n.next();
        n.set_next(reversed);
        reversed = node.as_ptr();
    }
    reversed
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn walk(mut p: *mut LlistNode, nodes: &[LlistNode]) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(n) = NonNull::new(p) {
            out.push(
                nodes
                    .iter()
                    .position(|x| ptr::eq(x, n.as_ptr()))
                    .expect("node from the array"),
            );
            // SAFETY: `n` points into `nodes`, alive for this function.
            p = unsafe { n.as_ref() }.next();
        }
        out
    }

    #[test]
    fn add_reports_empty_and_del_all_takes_everything() {
        let nodes: Vec<LlistNode> = (0..4).map(|_| LlistNode::new()).collect();
        let head = LlistHead::new();
        assert!(head.is_empty());
        for (i, n) in nodes.iter().enumerate() {
            // SAFETY: `nodes` outlives the list and each is added once.
            let was_empty = unsafe { head.add(NonNull::from(n)) };
            assert_eq!(was_empty, i == 0);
        }
        assert!(!head.is_empty());
        let chain = head.del_all();
        assert!(head.is_empty());
        assert_eq!(walk(chain, &nodes), [3, 2, 1, 0]);
        // SAFETY: `chain` was detached above and its nodes are alive.
        let fifo = unsafe { reverse_order(chain) };
        assert_eq!(walk(fifo, &nodes), [0, 1, 2, 3]);
        assert!(head.del_all().is_null());
        // SAFETY: reversing an empty chain touches nothing.
        assert!(unsafe { reverse_order(ptr::null_mut()) }.is_null());
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        const PER: usize = 2000;
        let nodes: Vec<LlistNode> = (0..4 * PER).map(|_| LlistNode::new()).collect();
        let head = LlistHead::new();
        let mut seen = vec![0u32; nodes.len()];
        std::thread::scope(|s| {
            for t in 0..4 {
                let (head, nodes) = (&head, &nodes);
                s.spawn(move || {
                    for n in &nodes[t * PER..(t + 1) * PER] {
                        // SAFETY: each node is added once and outlives the scope.
                        unsafe { head.add(NonNull::from(n)) };
                    }
                });
            }
            for _ in 0..200 {
                for i in walk(head.del_all(), &nodes) {
                    seen[i] += 1;
                }
            }
        });
        for i in walk(head.del_all(), &nodes) {
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&c| c == 1));
    }
}
