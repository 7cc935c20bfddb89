//! The safety core of branch expiry: which of the matched branches may really be deleted,
//! and in which order.
//!
//! Rules (each one a promise in `docs/ARCHITECTURE.md`):
//! - never the default branch, a protected branch, or a root branch (no parent);
//! - never a branch that has a child which is kept (Neon refuses to delete a parent, and
//!   deleting it would orphan work someone still uses);
//! - when children also expire, they are deleted first, so every deletion in the plan is
//!   of a branch that has no children left at that moment.
//!
//! The input may be malformed (a parent cycle from a buggy API response): branches on a
//! cycle are refused rather than looped over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A branch as the tree sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeBranch {
    pub id: String,
    pub parent_id: Option<String>,
    pub default: bool,
    pub protected: bool,
}

/// Why a matched branch is not in the deletion plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Default,
    Protected,
    Root,
    /// These children are kept (sorted ids).
    KeptChildren(Vec<String>),
    /// The parent chain loops: the API response is inconsistent.
    Cycle,
    /// The matched id is not among the project's branches.
    Unknown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Default => write!(f, "it is the project's default branch"),
            Refusal::Protected => write!(f, "it is protected"),
            Refusal::Root => write!(f, "it is a root branch"),
            Refusal::KeptChildren(c) => {
                write!(f, "it has children that are kept: {}", c.join(", "))
            }
            Refusal::Cycle => write!(f, "its parent chain loops (inconsistent branch list)"),
            Refusal::Unknown => write!(f, "it is not among the project's branches"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionPlan {
    /// Branch ids in the order they must be deleted: every branch after all its children.
    pub order: Vec<String>,
    /// Matched branches that must not be deleted, with the reason (sorted by id).
    pub refused: Vec<(String, Refusal)>,
}

/// Computes the deletion plan for the `matched` branches of one project, given *all* its
/// branches.
pub fn plan_deletions(all: &[TreeBranch], matched: &BTreeSet<String>) -> DeletionPlan {
    let by_id: HashMap<&str, &TreeBranch> = all.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for b in all {
        if let Some(p) = &b.parent_id {
            children.entry(p.as_str()).or_default().push(b.id.as_str());
        }
    }

    // Depth from the root along parent links; `None` for branches on (or below) a cycle.
    let mut depth: HashMap<&str, Option<usize>> = HashMap::new();
    for b in all {
        compute_depth(b.id.as_str(), &by_id, &mut depth);
    }

    let mut refused: BTreeMap<String, Refusal> = BTreeMap::new();
    let mut candidates: HashSet<&str> = HashSet::new();
    for id in matched {
        let Some(b) = by_id.get(id.as_str()) else {
            refused.insert(id.clone(), Refusal::Unknown);
            continue;
        };
        let refusal = if b.default {
            Some(Refusal::Default)
        } else if b.protected {
            Some(Refusal::Protected)
        } else if b.parent_id.is_none() {
            Some(Refusal::Root)
        } else if depth.get(id.as_str()).copied().flatten().is_none() {
            Some(Refusal::Cycle)
        } else {
            None
        };
        match refusal {
            Some(r) => {
                refused.insert(id.clone(), r);
            }
            None => {
                candidates.insert(b.id.as_str());
            }
        }
    }

    // A candidate survives only if every child survives. Process deepest first so a child's
    // fate is decided before its parent's.
    let mut ordered: Vec<&str> = candidates.iter().copied().collect();
    ordered.sort_by(|a, b| {
        let da = depth[a].expect("candidates have a depth");
        let db = depth[b].expect("candidates have a depth");
        db.cmp(&da).then(a.cmp(b))
    });
    let mut deletable: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    for id in ordered {
        let kids = children.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let mut kept: Vec<String> = kids
            .iter()
            .filter(|c| !deletable.contains(*c))
            .map(|c| c.to_string())
            .collect();
        if kept.is_empty() {
            deletable.insert(id);
            order.push(id.to_string());
        } else {
            kept.sort();
            refused.insert(id.to_string(), Refusal::KeptChildren(kept));
        }
    }
    DeletionPlan {
        order,
        refused: refused.into_iter().collect(),
    }
}

fn compute_depth<'a>(
    start: &'a str,
    by_id: &HashMap<&'a str, &'a TreeBranch>,
    depth: &mut HashMap<&'a str, Option<usize>>,
) {
    // Walk up iteratively until a known depth, a root, an unknown parent or a repeat.
    let mut path: Vec<&'a str> = Vec::new();
    let mut on_path: HashSet<&'a str> = HashSet::new();
    let mut cur = start;
    let base: Option<usize> = loop {
        if let Some(d) = depth.get(cur) {
            break d.map(|d| d + 1);
        }
        if !on_path.insert(cur) {
            break None; // cycle
        }
        path.push(cur);
        match by_id.get(cur).and_then(|b| b.parent_id.as_deref()) {
            // A parent we do not know (e.g. listed on another page) counts as a root above.
            Some(p) if by_id.contains_key(p) => cur = by_id[p].id.as_str(),
            _ => break Some(0),
        }
    };
    // `base` is the depth of the last element of `path`.
    let mut d = base;
    for id in path.into_iter().rev() {
        depth.insert(id, d);
        d = d.map(|d| d + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn br(id: &str, parent: Option<&str>) -> TreeBranch {
        TreeBranch {
            id: id.into(),
            parent_id: parent.map(Into::into),
            default: false,
            protected: false,
        }
    }
    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn children_go_before_parents_and_kept_children_protect_parents() {
        // main -> a -> a1, a2 ; main -> b -> b1
        let mut main = br("main", None);
        main.default = true;
        let all = vec![
            main,
            br("a", Some("main")),
            br("a1", Some("a")),
            br("a2", Some("a")),
            br("b", Some("main")),
            br("b1", Some("b")),
        ];
        let p = plan_deletions(&all, &set(&["a", "a1", "a2", "b", "main"]));
        assert_eq!(p.order, vec!["a1", "a2", "a"]);
        assert_eq!(
            p.refused,
            vec![
                ("b".into(), Refusal::KeptChildren(vec!["b1".into()])),
                ("main".into(), Refusal::Default),
            ]
        );
        assert_eq!(
            p.refused[0].1.to_string(),
            "it has children that are kept: b1"
        );
    }

    #[test]
    fn refused_child_protects_its_whole_ancestry() {
        let mut keep = br("c", Some("b"));
        keep.protected = true;
        let all = vec![
            br("root", None),
            br("a", Some("root")),
            br("b", Some("a")),
            keep,
        ];
        let p = plan_deletions(&all, &set(&["a", "b", "c", "root"]));
        assert!(p.order.is_empty());
        assert_eq!(
            p.refused,
            vec![
                ("a".into(), Refusal::KeptChildren(vec!["b".into()])),
                ("b".into(), Refusal::KeptChildren(vec!["c".into()])),
                ("c".into(), Refusal::Protected),
                ("root".into(), Refusal::Root),
            ]
        );
    }

    #[test]
    fn cycles_and_unknown_ids_are_refused() {
        let all = vec![br("x", Some("y")), br("y", Some("x")), br("z", Some("x"))];
        let p = plan_deletions(&all, &set(&["x", "z", "nope"]));
        assert!(p.order.is_empty());
        assert_eq!(
            p.refused,
            vec![
                ("nope".into(), Refusal::Unknown),
                ("x".into(), Refusal::Cycle),
                ("z".into(), Refusal::Cycle),
            ]
        );
    }

    #[test]
    fn unknown_parent_is_not_a_root() {
        let all = vec![br("orphan", Some("gone"))];
        let p = plan_deletions(&all, &set(&["orphan"]));
        assert_eq!(p.order, vec!["orphan"]);
    }

    /// A random tree: branch i's parent is a random earlier branch (0 is the root), plus
    /// random default/protected flags and a random matched set.
    fn arb_case() -> impl Strategy<Value = (Vec<TreeBranch>, BTreeSet<String>)> {
        (1usize..40).prop_flat_map(|n| {
            (
                proptest::collection::vec(any::<prop::sample::Index>(), n),
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec(prop::bool::weighted(0.15), n),
                proptest::collection::vec(prop::bool::weighted(0.7), n),
                any::<prop::sample::Index>(),
                any::<bool>(),
            )
                .prop_map(
                    move |(parents, extra_roots, protected, matched, def, has_default)| {
                        let mut all = Vec::with_capacity(n);
                        let mut m = BTreeSet::new();
                        for i in 0..n {
                            // Mostly one root, occasionally a second one (imported branches).
                            let parent = if i == 0 || (extra_roots[i] && i % 11 == 0) {
                                None
                            } else {
                                Some(format!("b{}", parents[i].index(i)))
                            };
                            all.push(TreeBranch {
                                id: format!("b{i}"),
                                parent_id: parent,
                                default: has_default && def.index(n) == i,
                                protected: protected[i],
                            });
                            if matched[i] {
                                m.insert(format!("b{i}"));
                            }
                        }
                        (all, m)
                    },
                )
        })
    }

    proptest! {
        #[test]
        fn plan_never_deletes_what_must_stay((all, matched) in arb_case()) {
            let p = plan_deletions(&all, &matched);
            let by_id: HashMap<&str, &TreeBranch> = all.iter().map(|b| (b.id.as_str(), b)).collect();
            let pos: HashMap<&str, usize> =
                p.order.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
            prop_assert_eq!(pos.len(), p.order.len(), "no branch twice");
            for id in &p.order {
                let b = by_id[id.as_str()];
                prop_assert!(matched.contains(id), "only matched branches");
                prop_assert!(!b.default, "default {} in plan", id);
                prop_assert!(!b.protected, "protected {} in plan", id);
                prop_assert!(b.parent_id.is_some(), "root {} in plan", id);
                // Every child is deleted too, and earlier: no kept child, no orphaning.
                for c in all.iter().filter(|c| c.parent_id.as_deref() == Some(id)) {
                    let cp = pos.get(c.id.as_str());
                    prop_assert!(cp.is_some(), "{} deleted but its child {} is kept", id, c.id);
                    prop_assert!(cp.unwrap() < &pos[id.as_str()], "child {} after parent {}", c.id, id);
                }
            }
            // Every matched branch is either planned or refused with a true reason.
            for id in &matched {
                let refusal = p.refused.iter().find(|(r, _)| r == id).map(|(_, r)| r);
                match (pos.contains_key(id.as_str()), refusal) {
                    (true, None) => {}
                    (false, Some(Refusal::KeptChildren(kids))) => {
                        prop_assert!(!kids.is_empty());
                        for k in kids {
                            prop_assert!(!pos.contains_key(k.as_str()), "kept child {} is planned", k);
                        }
                    }
                    (false, Some(Refusal::Default)) => prop_assert!(by_id[id.as_str()].default),
                    (false, Some(Refusal::Protected)) => prop_assert!(by_id[id.as_str()].protected),
                    (false, Some(Refusal::Root)) => prop_assert!(by_id[id.as_str()].parent_id.is_none()),
                    other => prop_assert!(false, "{} has inconsistent outcome {:?}", id, other),
                }
            }
            // Maximal: a matched, deletable-by-flags branch whose whole subtree is matched and
            // deletable-by-flags is planned (the rules do not refuse more than needed).
            fn subtree_ok(id: &str, all: &[TreeBranch], matched: &BTreeSet<String>) -> bool {
                let b = all.iter().find(|b| b.id == id).unwrap();
                matched.contains(id) && !b.default && !b.protected && b.parent_id.is_some()
                    && all.iter().filter(|c| c.parent_id.as_deref() == Some(id))
                        .all(|c| subtree_ok(&c.id, all, matched))
            }
            for id in &matched {
                if subtree_ok(id, &all, &matched) {
                    prop_assert!(pos.contains_key(id.as_str()), "{} could be deleted but is not", id);
                }
            }
        }
    }
}
