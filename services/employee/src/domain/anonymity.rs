//! Which groups of a cycle may be shown: the anonymity rules, as pure functions of counts.
//!
//! A decision depends only on the cycle's respondent counts and threshold, never on who asks
//! or in which order: an attacker cannot make a group visible by asking for other groups
//! first. The rules, with worked examples, are in docs/employee.md; in short:
//!
//! - **Groups** are a unit alone (`own`), a unit with everything below it (`rollup`), and a
//!   rollup filtered by one value of one attribute (`slice`). No other cut exists.
//! - **Tree**: top-down from the cycle's unit, a rollup is split into its parts (the unit's
//!   own members and the rollup of each child). A part with fewer than k respondents is
//!   hidden; so is a part whose complement in the rollup has 1..k-1 respondents; then, while
//!   the hidden parts together have 1..k-1 respondents, the smallest shown part is hidden too
//!   (secondary suppression), so the hidden parts can only be computed together, and together
//!   they are k or more people. Nothing below a hidden rollup is shown. Every hidden group
//!   therefore appears in exactly one visible sum, and what that sum gives away is a group of
//!   k or more (or nobody).
//! - **Slices** of a shown rollup follow the same pattern across the attribute's values, and
//!   additionally against the same value's slice of every enclosing unit (difference ≥ k or
//!   0), against the finest groups the tree shows (a slice must not differ from a shown set
//!   of units by 1..k-1 people either way), and within the value's own tree (the unit's own
//!   members with that value are never shown, so they and the hidden child slices must add
//!   up to 0 or ≥ k).

use std::collections::HashMap;

/// Why a group is hidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hidden {
    /// Fewer than k respondents (0 included).
    TooFew,
    /// The rest of the enclosing group has 1..k-1 respondents.
    Complement,
    /// Hidden so that a hidden neighbour cannot be computed from the total (secondary).
    Protects,
    /// An enclosing group is hidden.
    EnclosingHidden,
    /// Differs from a shown related group by 1..k-1 respondents.
    Difference,
    /// Its respondents differ from the same group's in the previous cycle by 1..k-1 people.
    MembershipChange,
}

/// A cycle's unit tree as frozen at launch; index 0 is the cycle's unit, parents come before
/// children.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Unit ids.
    pub ids: Vec<String>,
    /// Parent index (None for index 0).
    pub parent: Vec<Option<usize>>,
    /// Child indexes.
    pub children: Vec<Vec<usize>>,
    /// Depth (0 at the root).
    pub depth: Vec<u32>,
    index: HashMap<String, usize>,
    /// Entry and exit positions of a depth-first walk: `v` is in `u`'s subtree exactly when
    /// `enter[u] <= enter[v] < exit[u]`.
    enter: Vec<usize>,
    exit: Vec<usize>,
}

impl Tree {
    /// Builds the tree from (unit id, parent id) rows with parents before children; a parent
    /// id not in the rows makes the row a root (only the first row should be one).
    pub fn new(rows: &[(String, String)]) -> Self {
        let mut t = Tree::default();
        for (id, parent) in rows {
            let i = t.ids.len();
            let p = t.index.get(parent).copied();
            t.ids.push(id.clone());
            t.parent.push(p);
            t.children.push(Vec::new());
            t.depth.push(p.map_or(0, |p| t.depth[p] + 1));
            if let Some(p) = p {
                t.children[p].push(i);
            }
            t.index.insert(id.clone(), i);
        }
        t.number();
        t
    }

    fn number(&mut self) {
        let len = self.ids.len();
        self.enter = vec![0; len];
        self.exit = vec![0; len];
        let mut clock = 0;
        let roots: Vec<usize> = (0..len).filter(|u| self.parent[*u].is_none()).collect();
        // (unit, next child position) frames of an explicit stack: deep trees cannot overflow.
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for r in roots {
            self.enter[r] = clock;
            clock += 1;
            stack.push((r, 0));
            while let Some((u, next)) = stack.last_mut() {
                if let Some(&c) = self.children[*u].get(*next) {
                    *next += 1;
                    self.enter[c] = clock;
                    clock += 1;
                    stack.push((c, 0));
                } else {
                    self.exit[*u] = clock;
                    stack.pop();
                }
            }
        }
    }

    /// True when `v` is `u` or below it.
    pub fn in_subtree(&self, v: usize, u: usize) -> bool {
        self.enter[u] <= self.enter[v] && self.enter[v] < self.exit[u]
    }

    /// The index of a unit id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Number of units.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the tree has no unit.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `u` and its ancestors, nearest first.
    pub fn ancestors_or_self(&self, u: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(u), move |i| self.parent[*i])
    }

    /// `u` and every unit below it.
    pub fn subtree(&self, u: usize) -> Vec<usize> {
        let mut out = vec![u];
        let mut i = 0;
        while i < out.len() {
            out.extend(self.children[out[i]].iter().copied());
            i += 1;
        }
        out
    }
}

/// Invited and answered people of one full cell: a unit and three attribute values, as
/// frozen at launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Unit index in the tree.
    pub unit: usize,
    /// Tenure band, location, role family.
    pub attrs: [String; 3],
    /// Invited.
    pub invited: u64,
    /// Answered.
    pub answered: u64,
}

/// Where a respondent answered from, seen from the current cycle's tree: the unit (its index;
/// None when the unit is not in the current tree), the units it lay in when that cycle was
/// launched (itself and its ancestors in *that* cycle's tree, as current-tree indexes, nearest
/// first), and the three attribute values frozen at launch.
///
/// The ancestry is the answering cycle's own: a unit re-parented between two cycles took its
/// people out of its old parent's rollup and into the new one's, though none of them moved.
/// Placing previous respondents by unit in the current tree alone would count nobody as
/// changed, and the old parent's two rollups would differ by exactly that unit's people.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    unit: Option<usize>,
    within: Vec<usize>,
    attrs: [String; 3],
}

impl Place {
    /// `unit` of a cycle whose tree is `answered_in`, seen from `tree`; None when neither the
    /// unit nor any unit above it in `answered_in` is in `tree` (nothing there contains it).
    fn of(tree: &Tree, answered_in: &Tree, unit: &str, attrs: &[String; 3]) -> Option<Place> {
        let within: Vec<usize> = match answered_in.index_of(unit) {
            Some(u) => answered_in
                .ancestors_or_self(u)
                .filter_map(|a| tree.index_of(&answered_in.ids[a]))
                .collect(),
            None => tree
                .index_of(unit)
                .map(|u| tree.ancestors_or_self(u).collect())
                .unwrap_or_default(),
        };
        (!within.is_empty()).then(|| Place {
            unit: tree.index_of(unit),
            within,
            attrs: attrs.clone(),
        })
    }

    fn inside(&self, attr: usize, cut: &Cut) -> bool {
        match cut {
            Cut::Own(x) => self.unit == Some(*x),
            Cut::Rollup(x) => self.within.contains(x),
            Cut::Slice(x, v) => self.within.contains(x) && self.attrs[attr] == *v,
            Cut::OwnSlice(x, v) => self.unit == Some(*x) && self.attrs[attr] == *v,
        }
    }
}

/// A set of people of the current cycle's tree, for counting respondent changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A unit's own members.
    Own(usize),
    /// A unit and everything below it.
    Rollup(usize),
    /// A rollup's people with this value of the attribute.
    Slice(usize, String),
    /// A unit's own members with this value of the attribute.
    OwnSlice(usize, String),
}

/// The respondents who differ between the previous cycle and this one: people who answered
/// in only one of them, or from another unit, from a unit that lay elsewhere in the tree, or
/// with other attributes. A group's respondent change is the number of these people inside it
/// in exactly one of the two cycles (the symmetric difference of its respondent sets, each
/// cycle's group taken in that cycle's own tree): someone who moved between two teams changes
/// both teams but not their parent; a team moved to another parent changes both parents.
#[derive(Clone, Debug, Default)]
pub struct Movers {
    /// (place in the previous cycle, place in this one, people); `None` = did not answer there,
    /// or answered from a unit outside this cycle's tree.
    moves: Vec<(Option<Place>, Option<Place>, u64)>,
    /// Previous respondents erased since, who did not answer this cycle (under their alias),
    /// by place: an erased person synced again has a new id, and so looks like one leaver
    /// (the alias) and one newcomer. See [`Movers::change`].
    erased: Vec<(Place, u64)>,
}

/// Person keys that stand for an erased employee in participation (see the store's erasure).
pub const ERASED_PREFIX: &str = "erased-";

/// A group's respondent change as the rules must judge it: `counted` people changed, of whom
/// `erased` left under an erasure alias and `joined` are newcomers. Up to min(erased, joined)
/// of those pairs may be one person (erased, synced again, answering again), who did not
/// change at all, so the true change is one of counted, counted − 2, … counted − 2·pairs. The
/// rules hide a change of 1..k-1 (k ≥ 3), and a run of those values in steps of 2 from counted
/// down reaches that range exactly when its lowest value does: this returns that lowest value,
/// kept at 1 or more when anyone changed (0 only when nobody did).
fn judged_change(counted: u64, erased: u64, joined: u64) -> u64 {
    if counted == 0 {
        return 0;
    }
    counted.saturating_sub(2 * erased.min(joined)).max(1)
}

impl Movers {
    /// Compares two cycles' respondents, each as (person key, unit id, attributes), with each
    /// cycle's tree as frozen at its launch; groups are this cycle's (`tree`), matched by unit
    /// id in the previous one (`previous_tree`).
    pub fn between(
        previous_tree: &Tree,
        tree: &Tree,
        previous: &[(String, String, [String; 3])],
        current: &[(String, String, [String; 3])],
    ) -> Self {
        let mut by_person: HashMap<&str, (Option<Place>, Option<Place>)> = HashMap::new();
        for (person, unit, attrs) in previous {
            by_person.entry(person.as_str()).or_default().0 =
                Place::of(tree, previous_tree, unit, attrs);
        }
        for (person, unit, attrs) in current {
            by_person.entry(person.as_str()).or_default().1 = Place::of(tree, tree, unit, attrs);
        }
        let mut counted: HashMap<(Option<Place>, Option<Place>), u64> = HashMap::new();
        let mut erased: HashMap<Place, u64> = HashMap::new();
        for (person, (before, now)) in by_person {
            if before != now {
                if let (Some(b), None) = (&before, &now)
                    && person.starts_with(ERASED_PREFIX)
                {
                    *erased.entry(b.clone()).or_default() += 1;
                }
                *counted.entry((before, now)).or_default() += 1;
            }
        }
        let mut moves: Vec<_> = counted.into_iter().map(|((b, n), c)| (b, n, c)).collect();
        moves.sort();
        let mut erased: Vec<_> = erased.into_iter().collect();
        erased.sort();
        Self { moves, erased }
    }

    /// The respondent change of the union of `cuts`; slices are of attribute `attr`.
    pub fn delta(&self, attr: usize, cuts: &[Cut]) -> u64 {
        let inside = |p: &Option<Place>| {
            p.as_ref()
                .is_some_and(|p| cuts.iter().any(|c| p.inside(attr, c)))
        };
        let counted = self
            .moves
            .iter()
            .filter(|(b, n, _)| inside(b) != inside(n))
            .map(|(_, _, c)| c)
            .sum();
        let joined = self
            .moves
            .iter()
            .filter(|(b, n, _)| b.is_none() && inside(n))
            .map(|(_, _, c)| c)
            .sum();
        let erased = self
            .erased
            .iter()
            .filter(|(p, _)| cuts.iter().any(|c| p.inside(attr, c)))
            .map(|(_, c)| c)
            .sum();
        judged_change(counted, erased, joined)
    }

    /// Respondent change of every unit's own group and rollup, in one pass.
    fn tree_deltas(&self, tree: &Tree) -> (Vec<u64>, Vec<u64>) {
        let zeros = || vec![0u64; tree.len()];
        let (mut own, mut rollup) = (zeros(), zeros());
        // Newcomers and erased leavers per group, for `judged_change`.
        let (mut own_joined, mut rollup_joined) = (zeros(), zeros());
        let (mut own_erased, mut rollup_erased) = (zeros(), zeros());
        let unit = |p: &Option<Place>| p.as_ref().and_then(|p| p.unit);
        fn within(p: &Option<Place>) -> &[usize] {
            p.as_ref().map_or(&[], |p| p.within.as_slice())
        }
        for (b, n, c) in &self.moves {
            let (bu, nu) = (unit(b), unit(n));
            if bu != nu {
                for u in [bu, nu].into_iter().flatten() {
                    own[u] += c;
                }
            }
            let (ab, an) = (within(b), within(n));
            for u in ab
                .iter()
                .filter(|u| !an.contains(u))
                .chain(an.iter().filter(|u| !ab.contains(u)))
            {
                rollup[*u] += c;
            }
            if b.is_none() {
                if let Some(u) = nu {
                    own_joined[u] += c;
                }
                for u in an {
                    rollup_joined[*u] += c;
                }
            }
        }
        for (p, c) in &self.erased {
            if let Some(u) = p.unit {
                own_erased[u] += c;
            }
            for u in &p.within {
                rollup_erased[*u] += c;
            }
        }
        let judged = |counted: Vec<u64>, erased: &[u64], joined: &[u64]| -> Vec<u64> {
            counted
                .iter()
                .enumerate()
                .map(|(u, d)| judged_change(*d, erased[u], joined[u]))
                .collect()
        };
        (
            judged(own, &own_erased, &own_joined),
            judged(rollup, &rollup_erased, &rollup_joined),
        )
    }

    /// Respondent change of every slice of attribute `attr`, in one pass.
    fn slice_deltas(&self, attr: usize) -> HashMap<(usize, String), u64> {
        let mut out: HashMap<(usize, String), u64> = HashMap::new();
        let keys = |p: &Option<Place>| -> Vec<(usize, String)> {
            p.as_ref()
                .map(|p| {
                    p.within
                        .iter()
                        .map(|x| (*x, p.attrs[attr].clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut joined: HashMap<(usize, String), u64> = HashMap::new();
        let mut erased: HashMap<(usize, String), u64> = HashMap::new();
        for (b, n, c) in &self.moves {
            let (kb, kn) = (keys(b), keys(n));
            for key in kb
                .iter()
                .filter(|x| !kn.contains(x))
                .chain(kn.iter().filter(|x| !kb.contains(x)))
            {
                *out.entry(key.clone()).or_default() += c;
            }
            if b.is_none() {
                for key in kn {
                    *joined.entry(key).or_default() += c;
                }
            }
        }
        for (p, c) in &self.erased {
            for key in keys(&Some(p.clone())) {
                *erased.entry(key).or_default() += c;
            }
        }
        for (key, d) in out.iter_mut() {
            let at = |m: &HashMap<(usize, String), u64>| m.get(key).copied().unwrap_or(0);
            *d = judged_change(*d, at(&erased), at(&joined));
        }
        out
    }
}

/// Decisions for the tree's groups.
#[derive(Clone, Debug)]
pub struct TreePlan {
    /// The threshold.
    pub k: u64,
    /// Rollup (unit with descendants) of each unit: None = shown.
    pub rollup: Vec<Option<Hidden>>,
    /// Own members of each unit: None = shown.
    pub own: Vec<Option<Hidden>>,
    /// Respondents per rollup.
    pub n_rollup: Vec<u64>,
    /// Respondents per unit's own members.
    pub n_own: Vec<u64>,
    /// Invited per rollup.
    pub invited_rollup: Vec<u64>,
    /// Invited per unit's own members.
    pub invited_own: Vec<u64>,
    /// Respondent change since the previous cycle per unit's own members (0 without one).
    pub change_own: Vec<u64>,
    /// Respondent change since the previous cycle per rollup (0 without one).
    pub change_rollup: Vec<u64>,
}

/// A shown-or-hidden part of a partition, with its respondents and a stable tie-breaker.
struct Part {
    n: u64,
    order: usize,
    hidden: Option<Hidden>,
}

/// Hides parts until the hidden ones add up to 0 or at least k respondents and their
/// respondent change since the previous cycle (`change_ok` of the hidden parts' indexes) is
/// 0 or at least k: a reader can compute the hidden parts together, in both cycles. The part
/// hidden next is the smallest shown part, preferring one that makes the change acceptable.
/// Hiding every part always ends it: together they are the enclosing group, which is shown.
fn protect_partition(parts: &mut [Part], k: u64, change_ok: &dyn Fn(&[usize]) -> bool) {
    loop {
        let hidden_idx: Vec<usize> = (0..parts.len())
            .filter(|i| parts[*i].hidden.is_some())
            .collect();
        let hidden: u64 = hidden_idx.iter().map(|i| parts[*i].n).sum();
        // A part hidden because it is near another group (not because it is small) would be
        // the enclosing group minus the shown parts if it were hidden alone.
        let lone_difference = {
            let mut nonempty = hidden_idx.iter().filter(|i| parts[**i].n > 0);
            matches!(
                (nonempty.next(), nonempty.next()),
                (Some(i), None) if parts[*i].hidden == Some(Hidden::Difference)
            )
        };
        let size_ok = (hidden == 0 || hidden >= k) && !lone_difference;
        if size_ok && (hidden_idx.is_empty() || change_ok(&hidden_idx)) {
            return;
        }
        let shown = (0..parts.len()).filter(|i| parts[*i].hidden.is_none() && parts[*i].n > 0);
        let key = |i: &usize| (parts[*i].n, parts[*i].order);
        let fixes = |i: &usize| {
            let mut with: Vec<usize> = hidden_idx.clone();
            with.push(*i);
            with.sort_unstable();
            let n = hidden + parts[*i].n;
            (n == 0 || n >= k) && change_ok(&with)
        };
        let next = if size_ok {
            shown
                .clone()
                .filter(fixes)
                .min_by_key(key)
                .or_else(|| shown.min_by_key(key))
        } else {
            shown.min_by_key(key)
        };
        let Some(next) = next else {
            return;
        };
        parts[next].hidden = Some(Hidden::Protects);
    }
}

fn small(d: u64, k: u64) -> bool {
    d > 0 && d < k
}

fn small_difference(a: u64, b: u64, k: u64) -> bool {
    small(a.abs_diff(b), k)
}

/// Decides every own and rollup group of the tree for threshold `k`; with `movers`, also by
/// the respondent change since the previous cycle (R5).
pub fn plan_tree(
    tree: &Tree,
    own_answered: &[u64],
    own_invited: &[u64],
    k: u64,
    movers: Option<&Movers>,
) -> TreePlan {
    let len = tree.len();
    let mut n_rollup = own_answered.to_vec();
    let mut invited_rollup = own_invited.to_vec();
    for u in (1..len).rev() {
        if let Some(p) = tree.parent[u] {
            n_rollup[p] += n_rollup[u];
            invited_rollup[p] += invited_rollup[u];
        }
    }
    let mut rollup = vec![None; len];
    let mut own = vec![None; len];
    if len == 0 {
        return TreePlan {
            k,
            rollup,
            own,
            n_rollup,
            n_own: own_answered.to_vec(),
            invited_rollup,
            invited_own: own_invited.to_vec(),
            change_own: Vec::new(),
            change_rollup: Vec::new(),
        };
    }
    let (change_own, change_rollup) = movers
        .map(|m| m.tree_deltas(tree))
        .unwrap_or_else(|| (vec![0; len], vec![0; len]));
    if n_rollup[0] < k {
        rollup[0] = Some(Hidden::TooFew);
    } else if small(change_rollup[0], k) {
        rollup[0] = Some(Hidden::MembershipChange);
    }
    for p in 0..len {
        if rollup[p].is_some() {
            own[p] = Some(Hidden::EnclosingHidden);
            for c in &tree.children[p] {
                rollup[*c] = Some(Hidden::EnclosingHidden);
            }
            continue;
        }
        let total = n_rollup[p];
        let primary = |n: u64, change: u64| {
            if n < k {
                Some(Hidden::TooFew)
            } else if small_difference(total, n, k) {
                Some(Hidden::Complement)
            } else if small(change, k) {
                Some(Hidden::MembershipChange)
            } else {
                None
            }
        };
        let mut parts = vec![Part {
            n: own_answered[p],
            order: 0,
            hidden: primary(own_answered[p], change_own[p]),
        }];
        for (i, c) in tree.children[p].iter().enumerate() {
            parts.push(Part {
                n: n_rollup[*c],
                order: i + 1,
                hidden: primary(n_rollup[*c], change_rollup[*c]),
            });
        }
        let cut = |i: usize| match i {
            0 => Cut::Own(p),
            i => Cut::Rollup(tree.children[p][i - 1]),
        };
        let change_ok = |hidden: &[usize]| {
            movers.is_none_or(|m| {
                let cuts: Vec<Cut> = hidden.iter().map(|i| cut(*i)).collect();
                !small(m.delta(0, &cuts), k)
            })
        };
        protect_partition(&mut parts, k, &change_ok);
        own[p] = parts[0].hidden;
        for (i, c) in tree.children[p].iter().enumerate() {
            rollup[*c] = parts[i + 1].hidden;
        }
    }
    TreePlan {
        k,
        rollup,
        own,
        n_rollup,
        n_own: own_answered.to_vec(),
        invited_rollup,
        invited_own: own_invited.to_vec(),
        change_own,
        change_rollup,
    }
}

/// One slice (a rollup filtered by one attribute value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceState {
    /// Respondents.
    pub n: u64,
    /// Invited.
    pub invited: u64,
    /// None = shown.
    pub hidden: Option<Hidden>,
    /// Respondent change since the previous cycle (0 without one).
    pub change: u64,
}

/// Decisions for every slice of one attribute, keyed by (unit index, value).
#[derive(Clone, Debug, Default)]
pub struct SlicePlan {
    /// The slices.
    pub slices: HashMap<(usize, String), SliceState>,
    /// Values with a slice, per unit index, sorted.
    values: Vec<Vec<String>>,
}

impl SlicePlan {
    /// Values with a slice under unit `u`, sorted.
    pub fn values_of(&self, u: usize) -> &[String] {
        self.values.get(u).map_or(&[], Vec::as_slice)
    }
}

/// The finest groups the tree plan lets a reader compute: a shown own group, or the hidden
/// remainder of a shown rollup (its hidden parts together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FinestPart {
    Own(usize),
    Remainder(usize),
}

fn finest_part(tree: &Tree, plan: &TreePlan, unit: usize) -> Option<(FinestPart, usize)> {
    if plan.own[unit].is_none() {
        return Some((FinestPart::Own(unit), unit));
    }
    tree.ancestors_or_self(unit)
        .find(|a| plan.rollup[*a].is_none())
        .map(|a| (FinestPart::Remainder(a), a))
}

/// Decides every slice of attribute `attr` (0 tenure band, 1 location, 2 role family); with
/// `movers`, also by the respondent change since the previous cycle (R5).
///
/// Attributes are decided in their order, each against the slices already shown of the
/// attributes before it: a reader can ask for one breakdown and then another, and a slice of
/// one attribute that lies inside a shown slice of another (all of Oslo's newcomers are in
/// Oslo) must not differ from it by 1..k-1 people. So the decisions for `attr` are the same
/// whichever breakdown was asked first.
pub fn plan_slices(
    tree: &Tree,
    plan: &TreePlan,
    cells: &[Cell],
    attr: usize,
    movers: Option<&Movers>,
) -> SlicePlan {
    let mut earlier: Vec<(usize, SlicePlan)> = Vec::with_capacity(attr);
    for a in 0..attr {
        let p = decide_slices(tree, plan, cells, a, movers, &earlier);
        earlier.push((a, p));
    }
    decide_slices(tree, plan, cells, attr, movers, &earlier)
}

/// What the slices of the attribute being decided are checked against for one earlier
/// attribute: its decisions and how the two attributes' values meet, per unit.
struct Nesting<'a> {
    other: &'a SlicePlan,
    /// (unit, value of the attribute decided) → [(value of the other, respondents with
    /// both in the unit's subtree)].
    by_value: HashMap<(usize, &'a str), Vec<(&'a str, u64)>>,
    /// Respondents in a unit's subtree with both values.
    joint: HashMap<(usize, &'a str, &'a str), u64>,
    /// (unit, value v) → sizes of the other attribute's shown slices at the unit or below it
    /// whose respondents all have v: the slices (unit, v) holds.
    held: HashMap<(usize, &'a str), Vec<u64>>,
}

impl<'a> Nesting<'a> {
    fn new(tree: &Tree, cells: &'a [Cell], attr: usize, other: usize, plan: &'a SlicePlan) -> Self {
        let mut joint: HashMap<(usize, &'a str, &'a str), u64> = HashMap::new();
        for c in cells.iter().filter(|c| c.answered > 0) {
            for a in tree.ancestors_or_self(c.unit) {
                *joint
                    .entry((a, c.attrs[attr].as_str(), c.attrs[other].as_str()))
                    .or_default() += c.answered;
            }
        }
        let mut by_value: HashMap<(usize, &'a str), Vec<(&'a str, u64)>> = HashMap::new();
        let mut by_other: HashMap<(usize, &'a str), Vec<(&'a str, u64)>> = HashMap::new();
        for ((u, v, x), n) in &joint {
            by_value.entry((*u, *v)).or_default().push((*x, *n));
            by_other.entry((*u, *x)).or_default().push((*v, *n));
        }
        let mut held: HashMap<(usize, &'a str), Vec<u64>> = HashMap::new();
        for ((w, x), values) in &by_other {
            let [(v, m)] = values.as_slice() else {
                continue;
            };
            let shown = plan
                .slices
                .get(&(*w, (*x).to_owned()))
                .is_some_and(|s| s.hidden.is_none() && s.n == *m);
            if shown {
                for u in tree.ancestors_or_self(*w) {
                    held.entry((u, *v)).or_default().push(*m);
                }
            }
        }
        Self {
            other: plan,
            by_value,
            joint,
            held,
        }
    }

    fn shown(&self, w: usize, x: &str) -> Option<u64> {
        self.other
            .slices
            .get(&(w, x.to_owned()))
            .filter(|s| s.hidden.is_none())
            .map(|s| s.n)
    }

    /// True when slice (`u`, `v`) with `n` respondents nests with a shown slice of the other
    /// attribute (one holds all of the other's respondents) and the two differ by 1..k-1:
    /// subtracting one from the other would describe those few. The other slice may sit at
    /// `u`, above it or below it.
    fn near(&self, tree: &Tree, u: usize, v: &str, n: u64, k: u64) -> bool {
        if n == 0 {
            return false;
        }
        // Slices at u or below whose people all have v.
        if self
            .held
            .get(&(u, v))
            .is_some_and(|ms| ms.iter().any(|m| small_difference(n, *m, k)))
        {
            return true;
        }
        let mixes = self.by_value.get(&(u, v)).map_or(&[][..], Vec::as_slice);
        // Slices above u whose people are all in (u, v).
        for w in tree.ancestors_or_self(u).skip(1) {
            for (x, j) in mixes {
                if self
                    .shown(w, x)
                    .is_some_and(|m| m == *j && small_difference(n, m, k))
                {
                    return true;
                }
            }
        }
        // Slices that hold all of (u, v): then its people share one other value x, and the
        // slice (w, x) holds them for w above u, and for w below u down to the deepest unit
        // that still has all of them.
        let [(x, j)] = mixes else {
            return false;
        };
        debug_assert_eq!(*j, n);
        if tree
            .ancestors_or_self(u)
            .any(|w| self.shown(w, x).is_some_and(|m| small_difference(n, m, k)))
        {
            return true;
        }
        let mut w = u;
        while let Some(c) = tree.children[w]
            .iter()
            .copied()
            .find(|c| self.joint.get(&(*c, v, *x)).copied() == Some(n))
        {
            if self.shown(c, x).is_some_and(|m| small_difference(n, m, k)) {
                return true;
            }
            w = c;
        }
        false
    }
}

/// Decides the slices of `attr` given the decisions of the attributes before it.
fn decide_slices(
    tree: &Tree,
    plan: &TreePlan,
    cells: &[Cell],
    attr: usize,
    movers: Option<&Movers>,
    earlier: &[(usize, SlicePlan)],
) -> SlicePlan {
    let k = plan.k;
    let earlier: Vec<Nesting<'_>> = earlier
        .iter()
        .map(|(b, p)| Nesting::new(tree, cells, attr, *b, p))
        .collect();
    let changes = movers.map(|m| m.slice_deltas(attr)).unwrap_or_default();
    let change_ok = |cuts: &[Cut]| movers.is_none_or(|m| !small(m.delta(attr, cuts), k));
    let mut counts: HashMap<(usize, String), (u64, u64)> = HashMap::new();
    let mut own_v: HashMap<(usize, String), u64> = HashMap::new();
    // Per finest part: total respondents and respondents per value.
    let mut parts: HashMap<FinestPart, (usize, u64, HashMap<String, u64>)> = HashMap::new();
    for c in cells {
        let v = &c.attrs[attr];
        for a in tree.ancestors_or_self(c.unit) {
            let e = counts.entry((a, v.clone())).or_default();
            e.0 += c.answered;
            e.1 += c.invited;
        }
        *own_v.entry((c.unit, v.clone())).or_default() += c.answered;
        if let Some((part, anchor)) = finest_part(tree, plan, c.unit).filter(|_| c.answered > 0) {
            let e = parts
                .entry(part)
                .or_insert_with(|| (anchor, 0, HashMap::new()));
            e.1 += c.answered;
            *e.2.entry(v.clone()).or_default() += c.answered;
        }
    }
    // For slice (u, v): over the finest parts inside u's subtree, the non-v respondents of
    // parts that hold some v (mixed_y) and the v respondents of parts that hold some non-v
    // (mixed_x). A reader can compute "slice minus the v-only parts" and "the parts holding v
    // minus the slice"; these are those groups' sizes.
    let mut mixed: HashMap<(usize, String), (u64, u64)> = HashMap::new();
    for (anchor, total, by_value) in parts.values() {
        for (v, x) in by_value {
            let y = total - x;
            if *x == 0 || y == 0 {
                continue;
            }
            for a in tree.ancestors_or_self(*anchor) {
                let e = mixed.entry((a, v.clone())).or_default();
                e.0 += y;
                e.1 += *x;
            }
        }
    }
    let mut values_at: Vec<Vec<String>> = vec![Vec::new(); tree.len()];
    for (u, v) in counts.keys() {
        values_at[*u].push(v.clone());
    }
    for v in &mut values_at {
        v.sort();
    }
    let mut slices: HashMap<(usize, String), SliceState> = HashMap::new();
    let max_depth = tree.depth.iter().copied().max().unwrap_or(0);
    for level in 0..=max_depth {
        let units: Vec<usize> = (0..tree.len())
            .filter(|u| tree.depth[*u] == level)
            .collect();
        for &u in &units {
            let total = plan.n_rollup[u];
            let mut unit_parts = Vec::new();
            for (order, v) in values_at[u].iter().enumerate() {
                let (n, invited) = counts[&(u, v.clone())];
                let enclosing_hidden = plan.rollup[u].is_some()
                    || tree.parent[u]
                        .and_then(|p| slices.get(&(p, v.clone())))
                        .is_some_and(|s| s.hidden.is_some());
                let near_ancestor = tree.ancestors_or_self(u).skip(1).any(|a| {
                    slices
                        .get(&(a, v.clone()))
                        .is_some_and(|s| s.hidden.is_none() && small_difference(s.n, n, k))
                });
                let near_units = mixed
                    .get(&(u, v.clone()))
                    .is_some_and(|(y, x)| (*y > 0 && *y < k) || (*x > 0 && *x < k))
                    || earlier.iter().any(|e| e.near(tree, u, v, n, k));
                let hidden = if enclosing_hidden {
                    Some(Hidden::EnclosingHidden)
                } else if n < k {
                    Some(Hidden::TooFew)
                } else if small_difference(total, n, k) {
                    Some(Hidden::Complement)
                } else if near_ancestor || near_units {
                    Some(Hidden::Difference)
                } else if small(changes.get(&(u, v.clone())).copied().unwrap_or(0), k) {
                    Some(Hidden::MembershipChange)
                } else {
                    None
                };
                unit_parts.push((v.clone(), invited, Part { n, order, hidden }));
            }
            if plan.rollup[u].is_none() {
                let mut ps: Vec<Part> = unit_parts
                    .iter()
                    .map(|(_, _, p)| Part {
                        n: p.n,
                        order: p.order,
                        hidden: p.hidden,
                    })
                    .collect();
                let values: Vec<&String> = unit_parts.iter().map(|(v, _, _)| v).collect();
                let union_ok = |hidden: &[usize]| {
                    let cuts: Vec<Cut> = hidden
                        .iter()
                        .map(|i| Cut::Slice(u, values[*i].clone()))
                        .collect();
                    change_ok(&cuts)
                };
                protect_partition(&mut ps, k, &union_ok);
                for (i, p) in ps.into_iter().enumerate() {
                    unit_parts[i].2.hidden = p.hidden;
                }
            }
            for (v, invited, p) in unit_parts {
                let change = changes.get(&(u, v.clone())).copied().unwrap_or(0);
                slices.insert(
                    (u, v),
                    SliceState {
                        n: p.n,
                        invited,
                        hidden: p.hidden,
                        change,
                    },
                );
            }
        }
        // The value's own tree: a shown slice of a parent equals its own members with that
        // value (never shown) plus its children's slices. What is hidden there must add up
        // to 0 or ≥ k, and so must what those hidden parts leave out of their shown units.
        let parents: Vec<usize> = {
            let mut ps: Vec<usize> = units.iter().filter_map(|u| tree.parent[*u]).collect();
            ps.sort_unstable();
            ps.dedup();
            ps
        };
        for p in parents {
            if plan.rollup[p].is_some() {
                continue;
            }
            for v in values_at[p].clone() {
                if slices
                    .get(&(p, v.clone()))
                    .is_none_or(|s| s.hidden.is_some())
                {
                    continue;
                }
                let own = own_v.get(&(p, v.clone())).copied().unwrap_or(0);
                loop {
                    let kids: Vec<usize> = tree.children[p]
                        .iter()
                        .copied()
                        .filter(|c| slices.contains_key(&(*c, v.clone())))
                        .collect();
                    let hidden: Vec<(usize, u64)> = kids
                        .iter()
                        .filter_map(|c| slices.get(&(*c, v.clone())).map(|s| (*c, s)))
                        .filter(|(_, s)| s.hidden.is_some() && s.n > 0)
                        .map(|(c, s)| (c, s.n))
                        .collect();
                    let h = own + hidden.iter().map(|(_, n)| n).sum::<u64>();
                    // A child slice hidden for being near another group, hidden alone, would
                    // be the parent's slice minus the shown children.
                    let lone_difference = own == 0
                        && matches!(hidden.as_slice(), [(c, _)]
                            if slices.get(&(*c, v.clone())).is_some_and(|s| s.hidden == Some(Hidden::Difference)));
                    // What the hidden parts leave out of their own (shown) units: computable
                    // once the hidden parts are, so it must not be 1..k-1 people either.
                    let rest: u64 = hidden
                        .iter()
                        .map(|(c, n)| plan.n_rollup[*c] - n)
                        .sum::<u64>()
                        + if own > 0 && plan.own[p].is_none() {
                            plan.n_own[p] - own
                        } else {
                            0
                        };
                    let cuts: Vec<Cut> = std::iter::once(Cut::OwnSlice(p, v.clone()))
                        .chain(hidden.iter().map(|(c, _)| Cut::Slice(*c, v.clone())))
                        .collect();
                    if (h == 0 || (h >= k && !small(rest, k) && !lone_difference))
                        && change_ok(&cuts)
                    {
                        break;
                    }
                    let Some(c) = kids
                        .iter()
                        .copied()
                        .filter(|c| {
                            slices
                                .get(&(*c, v.clone()))
                                .is_some_and(|s| s.hidden.is_none() && s.n > 0)
                        })
                        .min_by_key(|c| (slices[&(*c, v.clone())].n, *c))
                    else {
                        break;
                    };
                    if let Some(s) = slices.get_mut(&(c, v.clone())) {
                        s.hidden = Some(Hidden::Protects);
                    }
                }
            }
        }
    }
    SlicePlan {
        slices,
        values: values_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root ─┬─ a ─┬─ a1
    ///       │     └─ a2
    ///       └─ b
    fn tree() -> Tree {
        Tree::new(&[
            ("root".into(), "".into()),
            ("a".into(), "root".into()),
            ("b".into(), "root".into()),
            ("a1".into(), "a".into()),
            ("a2".into(), "a".into()),
        ])
    }

    fn plan(own: [u64; 5]) -> TreePlan {
        plan_tree(&tree(), &own, &own, 5, None)
    }

    #[test]
    fn small_units_are_hidden_and_protected_by_a_neighbour() {
        // a1 has 2: hidden. a2 (8) is the rest of a (10) but for a1: a − a2 would be a1, so
        // a2 is hidden too (its complement is small).
        let p = plan([6, 0, 9, 2, 8]);
        assert_eq!(p.rollup[3], Some(Hidden::TooFew));
        assert_eq!(p.rollup[4], Some(Hidden::Complement));
        assert_eq!(p.rollup[1], None);
        assert_eq!(p.own[1], Some(Hidden::TooFew));
        // The hidden parts of a (own 0 + a1 2 + a2 8) add up to 10 ≥ 5.
        assert_eq!(p.n_rollup[1], 10);
        // Nothing below a hidden rollup is shown.
        let p = plan([20, 0, 9, 1, 2]);
        assert_eq!(p.rollup[1], Some(Hidden::TooFew));
        assert_eq!(p.rollup[3], Some(Hidden::EnclosingHidden));
        assert_eq!(p.own[1], Some(Hidden::EnclosingHidden));
    }

    #[test]
    fn a_part_whose_rest_is_small_is_hidden() {
        // a has 12 = own 0 + a1 10 + a2 2: a1 is fine alone but a − a1 = 2 people.
        let p = plan([10, 0, 10, 10, 2]);
        assert_eq!(p.rollup[3], Some(Hidden::Complement));
        assert_eq!(p.rollup[4], Some(Hidden::TooFew));
        // The unit with and without descendants: root own 10, rollup 32 - fine; a leaf's own
        // group equals its rollup (difference 0 reveals nothing).
        assert_eq!(p.own[0], None);
        assert_eq!(p.own[2], None);
    }

    #[test]
    fn hidden_parts_together_are_never_one_to_k_minus_one() {
        // root: own 1, a 20, b 3 → own and b hidden (1 + 3 = 4 < 5) → a hidden too.
        let p = plan([1, 20, 3, 0, 0]);
        assert_eq!(p.own[0], Some(Hidden::TooFew));
        assert_eq!(p.rollup[2], Some(Hidden::TooFew));
        assert_eq!(p.rollup[1], Some(Hidden::Complement));
        assert_eq!(p.rollup[0], None);
        // Secondary suppression proper: root own 3 (hidden), a 10, b 12: the hidden part alone
        // would be root − a − b, so the smaller shown part (a) is hidden with it.
        let p = plan([3, 10, 12, 0, 0]);
        assert_eq!(p.own[0], Some(Hidden::TooFew));
        assert_eq!(p.rollup[1], Some(Hidden::Protects));
        assert_eq!(p.rollup[2], None);
    }

    fn cell(unit: usize, tenure: &str, answered: u64) -> Cell {
        Cell {
            unit,
            attrs: [tenure.into(), String::new(), String::new()],
            invited: answered,
            answered,
        }
    }

    #[test]
    fn slices_need_k_and_a_complement_of_k() {
        let t = Tree::new(&[("root".into(), "".into())]);
        let cells = vec![cell(0, "new", 5), cell(0, "old", 3), cell(0, "mid", 9)];
        let p = plan_tree(&t, &[17], &[17], 5, None);
        let s = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(s.slices[&(0, "old".into())].hidden, Some(Hidden::TooFew));
        // old (3) is hidden; new (5) is the smallest shown: hidden so old cannot be
        // computed as total − new − mid.
        assert_eq!(s.slices[&(0, "new".into())].hidden, Some(Hidden::Protects));
        assert_eq!(s.slices[&(0, "mid".into())].hidden, None);
        // A slice whose complement is 1..k-1 is hidden.
        let cells = vec![cell(0, "new", 15), cell(0, "old", 2)];
        let p = plan_tree(&t, &[17], &[17], 5, None);
        let s = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(
            s.slices[&(0, "new".into())].hidden,
            Some(Hidden::Complement)
        );
    }

    #[test]
    fn a_slice_must_not_differ_from_a_shown_unit_by_a_few() {
        // root has children a (6: 5 new + 1 old) and b (10 old). The slice root/new (5)
        // equals a's new people; a (shown, 6) minus it would be 1 person.
        let t = Tree::new(&[
            ("root".into(), "".into()),
            ("a".into(), "root".into()),
            ("b".into(), "root".into()),
        ]);
        let cells = vec![cell(1, "new", 5), cell(1, "old", 1), cell(2, "old", 10)];
        let p = plan_tree(&t, &[0, 6, 10], &[0, 6, 10], 5, None);
        assert_eq!(p.rollup[1], None);
        let s = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(
            s.slices[&(0, "new".into())].hidden,
            Some(Hidden::Difference)
        );
        // root/old (11) minus b (shown, 10 old people) would be a's one old person.
        assert_eq!(
            s.slices[&(0, "old".into())].hidden,
            Some(Hidden::Difference)
        );
    }

    #[test]
    fn a_slice_nested_in_a_shown_slice_of_another_attribute_must_not_differ_by_a_few() {
        // 20 respondents: the 10 newcomers all work in Oslo; Oslo has one more (an old
        // hand), Bergen has the other 9 old hands. Each breakdown alone passes every rule,
        // but Oslo (11) minus the newcomers (10) would be the one old hand in Oslo.
        let t = Tree::new(&[("root".into(), "".into())]);
        let at = |tenure: &str, location: &str, answered: u64| Cell {
            unit: 0,
            attrs: [tenure.into(), location.into(), String::new()],
            invited: answered,
            answered,
        };
        let cells = vec![
            at("<1y", "oslo", 10),
            at(">1y", "oslo", 1),
            at(">1y", "bergen", 9),
        ];
        let p = plan_tree(&t, &[20], &[20], 5, None);
        let tenure = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(tenure.slices[&(0, "<1y".into())].hidden, None);
        assert_eq!(tenure.slices[&(0, ">1y".into())].hidden, None);
        let location = plan_slices(&t, &p, &cells, 1, None);
        // Oslo holds all newcomers and one more; Bergen lies inside the old hands, one fewer.
        assert_eq!(
            location.slices[&(0, "oslo".into())].hidden,
            Some(Hidden::Difference)
        );
        assert_eq!(
            location.slices[&(0, "bergen".into())].hidden,
            Some(Hidden::Difference)
        );
        // With five old hands in Oslo the difference is k: both breakdowns are shown.
        let cells = vec![
            at("<1y", "oslo", 10),
            at(">1y", "oslo", 5),
            at(">1y", "bergen", 9),
        ];
        let p = plan_tree(&t, &[24], &[24], 5, None);
        let location = plan_slices(&t, &p, &cells, 1, None);
        assert!(location.slices.values().all(|s| s.hidden.is_none()));
        // Deciding a later attribute changes nothing of an earlier one.
        let tenure_alone = plan_slices(&t, &p, &cells, 0, None);
        let _ = plan_slices(&t, &p, &cells, 2, None);
        assert_eq!(
            plan_slices(&t, &p, &cells, 0, None).slices,
            tenure_alone.slices
        );
    }

    #[test]
    fn a_slice_nested_in_another_attributes_slice_of_a_unit_below_is_checked_too() {
        // root ─ w (10 newcomers in Oslo, 1 newcomer and 6 old hands in Bergen)
        //      └ z (6 newcomers and 10 old hands in Bergen).
        // Every tenure slice passes. root/Oslo is the same ten people as w/Oslo and lies
        // inside w's newcomers (11): w/newcomers − root/Oslo would be one person.
        let t = Tree::new(&[
            ("root".into(), "".into()),
            ("w".into(), "root".into()),
            ("z".into(), "root".into()),
        ]);
        let at = |unit: usize, tenure: &str, location: &str, answered: u64| Cell {
            unit,
            attrs: [tenure.into(), location.into(), String::new()],
            invited: answered,
            answered,
        };
        let cells = vec![
            at(1, "<1y", "oslo", 10),
            at(1, "<1y", "bergen", 1),
            at(1, ">1y", "bergen", 6),
            at(2, "<1y", "bergen", 6),
            at(2, ">1y", "bergen", 10),
        ];
        let p = plan_tree(&t, &[0, 17, 16], &[0, 17, 16], 5, None);
        let tenure = plan_slices(&t, &p, &cells, 0, None);
        assert!(tenure.slices.values().all(|s| s.hidden.is_none()));
        let location = plan_slices(&t, &p, &cells, 1, None);
        let reason = |u: usize, v: &str| location.slices[&(u, v.to_owned())].hidden;
        assert_eq!(reason(0, "oslo"), Some(Hidden::Difference));
        // Hidden alone, root/Oslo would be root minus root/Bergen: Bergen is hidden with it.
        assert!(reason(0, "bergen").is_some());
        // And so is everything of those values below (w/Oslo lies inside w's newcomers too).
        assert_eq!(reason(1, "oslo"), Some(Hidden::EnclosingHidden));
        assert!(reason(1, "bergen").is_some());
    }

    #[test]
    fn a_slice_hidden_for_a_difference_is_not_left_alone_to_be_subtracted() {
        // root ─ u (11 new, 20 old), z (1 new, 9 old). u/new (11) differs from root/new (12)
        // by z's one newcomer, so it is hidden; alone, it would be u − u/old.
        let t = Tree::new(&[
            ("root".into(), "".into()),
            ("u".into(), "root".into()),
            ("z".into(), "root".into()),
        ]);
        let cells = vec![
            cell(1, "new", 11),
            cell(1, "old", 20),
            cell(2, "new", 1),
            cell(2, "old", 9),
        ];
        let p = plan_tree(&t, &[0, 31, 10], &[0, 31, 10], 5, None);
        assert_eq!((p.rollup[1], p.rollup[2]), (None, None));
        let s = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(
            s.slices[&(1, "new".into())].hidden,
            Some(Hidden::Difference)
        );
        assert_eq!(s.slices[&(1, "old".into())].hidden, Some(Hidden::Protects));
    }

    #[test]
    fn a_child_slice_that_differs_from_its_parent_slice_by_a_few_is_hidden() {
        let t = Tree::new(&[
            ("root".into(), "".into()),
            ("a".into(), "root".into()),
            ("b".into(), "root".into()),
        ]);
        // new: a 8, b 2 → root/new 10; a/new differs from root/new by 2.
        let cells = vec![
            cell(1, "new", 8),
            cell(1, "old", 8),
            cell(2, "new", 2),
            cell(2, "old", 9),
        ];
        let p = plan_tree(&t, &[0, 16, 11], &[0, 16, 11], 5, None);
        let s = plan_slices(&t, &p, &cells, 0, None);
        assert_eq!(s.slices[&(0, "new".into())].hidden, None);
        assert_eq!(
            s.slices[&(1, "new".into())].hidden,
            Some(Hidden::Difference)
        );
        assert_eq!(s.slices[&(2, "new".into())].hidden, Some(Hidden::TooFew));
        // b/old (9) is hidden because b − b/old = 2; but root/old − a/old would give it back,
        // so a/old is hidden too.
        assert_eq!(
            s.slices[&(2, "old".into())].hidden,
            Some(Hidden::Complement)
        );
        assert_eq!(s.slices[&(1, "old".into())].hidden, Some(Hidden::Protects));
    }

    type Resp = Vec<(String, String, [String; 3])>;

    fn people(prefix: &str, range: std::ops::Range<u32>, unit: &str, tenure: &str) -> Resp {
        range
            .map(|i| {
                (
                    format!("{prefix}{i}"),
                    unit.to_owned(),
                    [tenure.to_owned(), String::new(), String::new()],
                )
            })
            .collect()
    }

    fn four() -> Tree {
        Tree::new(&[
            ("root".into(), "".into()),
            ("u".into(), "root".into()),
            ("v".into(), "root".into()),
            ("w".into(), "root".into()),
        ])
    }

    #[test]
    fn subtree_membership_follows_the_tree() {
        let t = tree();
        assert!(t.in_subtree(3, 1) && t.in_subtree(4, 1) && t.in_subtree(1, 1));
        assert!(!t.in_subtree(2, 1) && !t.in_subtree(1, 3));
        assert!((0..5).all(|u| t.in_subtree(u, 0)));
    }

    #[test]
    fn a_group_with_a_few_new_respondents_is_hidden_and_cannot_be_computed() {
        let t = four();
        let prev = [
            people("u", 0..10, "u", ""),
            people("v", 0..10, "v", ""),
            people("w", 0..10, "w", ""),
        ]
        .concat();
        // u: the same ten and one newcomer; v: the same ten; w: five left and five joined.
        let cur = [
            people("u", 0..11, "u", ""),
            people("v", 0..10, "v", ""),
            people("w", 5..15, "w", ""),
        ]
        .concat();
        let m = Movers::between(&t, &t, &prev, &cur);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        assert_eq!(m.delta(0, &[Cut::Rollup(3)]), 10);
        assert_eq!(m.delta(0, &[Cut::Rollup(0)]), 11);
        let own = [0, 11, 10, 10];
        let p = plan_tree(&t, &own, &own, 5, Some(&m));
        assert_eq!(p.rollup[0], None);
        assert_eq!(p.rollup[1], Some(Hidden::MembershipChange));
        // root − v would be u + w in both cycles: 11 people changed, so that is fine; root − v
        // − w would be u alone, so w (which fixes the change) is hidden with u, not v
        // (u + v would still differ by the one newcomer).
        assert_eq!(p.rollup[3], Some(Hidden::Protects));
        assert_eq!(p.rollup[2], None);
        // Without a previous cycle nothing of this is hidden.
        let p = plan_tree(&t, &own, &own, 5, None);
        assert!(p.rollup.iter().all(Option::is_none));
    }

    #[test]
    fn a_team_moved_to_another_parent_changes_both_parents_though_nobody_moved() {
        // Last cycle T (one respondent) was under D1 beside S (ten); since then T moved under
        // D2. D1's rollup lost T's person: shown twice, 11·a − 10·b would be that answer.
        let previous = Tree::new(&[
            ("root".into(), "".into()),
            ("d1".into(), "root".into()),
            ("d2".into(), "root".into()),
            ("s".into(), "d1".into()),
            ("t".into(), "d1".into()),
        ]);
        let t = Tree::new(&[
            ("root".into(), "".into()),
            ("d1".into(), "root".into()),
            ("d2".into(), "root".into()),
            ("s".into(), "d1".into()),
            ("t".into(), "d2".into()),
        ]);
        let answered = [
            people("s", 0..10, "s", ""),
            people("t", 0..1, "t", ""),
            people("x", 0..10, "d2", ""),
        ]
        .concat();
        let m = Movers::between(&previous, &t, &answered, &answered);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        assert_eq!(m.delta(0, &[Cut::Rollup(2)]), 1);
        assert_eq!(m.delta(0, &[Cut::Rollup(0)]), 0);
        assert_eq!(m.delta(0, &[Cut::Own(4)]), 0);
        assert_eq!(m.delta(0, &[Cut::Rollup(1), Cut::Rollup(2)]), 0);
        let own = [0, 0, 10, 10, 1];
        let p = plan_tree(&t, &own, &own, 5, Some(&m));
        assert_eq!((p.change_rollup[1], p.change_rollup[2]), (1, 1));
        assert_eq!(p.rollup[1], Some(Hidden::MembershipChange));
        assert_eq!(p.rollup[2], Some(Hidden::MembershipChange));
        assert_eq!(p.rollup[0], None);
        // Judged with the current tree alone (the former rule), D1 and D2 would be shown.
        let blind = Movers::between(&t, &t, &answered, &answered);
        let p = plan_tree(&t, &own, &own, 5, Some(&blind));
        assert_eq!((p.rollup[1], p.rollup[2]), (None, None));
        // Both cycles in one tree (nothing moved), nothing changed.
        let m = Movers::between(&t, &t, &answered, &answered);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 0);
        // A team that left the tree took its people out of its old parents' rollups.
        let without_t = Tree::new(&[
            ("root".into(), "".into()),
            ("d1".into(), "root".into()),
            ("d2".into(), "root".into()),
            ("s".into(), "d1".into()),
        ]);
        let now = [people("s", 0..10, "s", ""), people("x", 0..10, "d2", "")].concat();
        let m = Movers::between(&previous, &without_t, &answered, &now);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        assert_eq!(m.delta(0, &[Cut::Rollup(0)]), 1);
        assert_eq!(m.delta(0, &[Cut::Own(3)]), 0);
    }

    #[test]
    fn an_erased_person_synced_again_cannot_make_a_small_change_look_large() {
        // Team u: the same ten people in both cycles and one real newcomer; two of the ten
        // were erased and synced again in between (new ids), so the count alone would say
        // 1 + 2·2 = 5 changed and show u, whose two cycles differ by the newcomer alone.
        let t = four();
        let mut prev = people("u", 0..10, "u", "");
        for p in prev.iter_mut().take(2) {
            p.0 = format!("{ERASED_PREFIX}{}", p.0);
        }
        let mut cur = people("u", 2..10, "u", "");
        cur.extend(people("again", 0..2, "u", ""));
        cur.extend(people("new", 0..1, "u", ""));
        let m = Movers::between(&t, &t, &prev, &cur);
        // At least 1, at most 5: judged by the lowest.
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        let own = [0, 11, 0, 0];
        let p = plan_tree(&t, &own, &own, 5, Some(&m));
        assert_eq!((p.change_rollup[0], p.change_rollup[1]), (1, 1));
        // The root holds only u: both differ from the previous cycle by the newcomer.
        assert_eq!(p.rollup[0], Some(Hidden::MembershipChange));
        assert_eq!(p.rollup[1], Some(Hidden::EnclosingHidden));
        // Erased people who left for good, with enough newcomers besides: still a large change.
        let mut cur = people("u", 2..10, "u", "");
        cur.extend(people("new", 0..7, "u", ""));
        let m = Movers::between(&t, &t, &prev, &cur);
        // 9 counted; up to two of the newcomers could be the erased two: 9 − 4 = 5.
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 5);
        // Nobody erased: the count as it is.
        let cur = [people("u", 0..10, "u", ""), people("new", 0..1, "u", "")].concat();
        let m = Movers::between(&t, &t, &people("u", 0..10, "u", ""), &cur);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        assert_eq!(judged_change(0, 3, 3), 0);
        assert_eq!(judged_change(6, 1, 5), 4);
        assert_eq!(judged_change(6, 5, 1), 4);
        assert_eq!(judged_change(4, 3, 3), 1);
    }

    #[test]
    fn people_moving_between_siblings_change_the_siblings_not_the_parent() {
        let t = four();
        let prev = [people("u", 0..10, "u", ""), people("v", 0..10, "v", "")].concat();
        let mut cur = [people("u", 1..10, "u", ""), people("v", 0..10, "v", "")].concat();
        cur.push(("u0".into(), "v".into(), Default::default()));
        let m = Movers::between(&t, &t, &prev, &cur);
        assert_eq!(m.delta(0, &[Cut::Rollup(1)]), 1);
        assert_eq!(m.delta(0, &[Cut::Rollup(1), Cut::Rollup(2)]), 0);
        let own = [0, 9, 11, 0];
        let p = plan_tree(&t, &own, &own, 5, Some(&m));
        assert_eq!(p.rollup[0], None);
        assert_eq!(p.rollup[1], Some(Hidden::MembershipChange));
        assert_eq!(p.rollup[2], Some(Hidden::MembershipChange));
    }

    #[test]
    fn a_whole_cycle_one_person_apart_from_the_previous_is_hidden() {
        let t = four();
        let prev = people("u", 0..10, "u", "");
        let cur = people("u", 0..11, "u", "");
        let m = Movers::between(&t, &t, &prev, &cur);
        let own = [0, 11, 0, 0];
        let p = plan_tree(&t, &own, &own, 5, Some(&m));
        assert_eq!(p.rollup[0], Some(Hidden::MembershipChange));
        assert_eq!(p.rollup[1], Some(Hidden::EnclosingHidden));
    }

    #[test]
    fn slices_follow_the_respondent_change_too() {
        let t = Tree::new(&[("root".into(), "".into())]);
        // One person's tenure band went from new to old between the cycles.
        let prev = [
            people("n", 0..6, "root", "new"),
            people("o", 0..10, "root", "old"),
        ]
        .concat();
        let cur = [
            people("n", 1..6, "root", "new"),
            people("n", 0..1, "root", "old"),
            people("o", 0..10, "root", "old"),
        ]
        .concat();
        let m = Movers::between(&t, &t, &prev, &cur);
        let cells = vec![cell(0, "new", 5), cell(0, "old", 11)];
        let p = plan_tree(&t, &[16], &[16], 5, Some(&m));
        assert_eq!(p.rollup[0], None);
        let s = plan_slices(&t, &p, &cells, 0, Some(&m));
        assert_eq!(
            s.slices[&(0, "new".into())].hidden,
            Some(Hidden::MembershipChange)
        );
        assert_eq!(
            s.slices[&(0, "old".into())].hidden,
            Some(Hidden::MembershipChange)
        );
    }
}
