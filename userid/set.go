package userid

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Set is a compiled set of patterns that matches a user ID against all of
// them in one pass: the patterns share a trie, and matching walks it with
// the set of trie nodes the user ID's prefix can be at (a nondeterministic
// automaton), so its cost grows with the user ID's length and the nodes
// alive at once, not with the number of patterns (BENCHMARKS.md). Adding or
// removing a pattern costs its length. It is the one pattern matcher of
// production code. Its reading of a pattern: `*` any run of characters, `?`
// exactly one, every other character itself, over the whole user ID. Its
// case rule, everywhere in presence-router: ASCII letters match regardless
// of case (A-Z and a-z), and every other character matches only itself.
// User IDs are ASCII by the specification's grammar; a non-ASCII character
// in one never matches an ASCII letter of a pattern (Unicode folding would
// let the Kelvin sign match k and the long s match s). Match is safe for
// concurrent use; Add and Remove must not run with anything else.
type Set struct {
	nodes   []setNode
	live    map[string]struct{}
	scratch sync.Pool
}

// setNode is one trie node: what follows a prefix of one or more patterns.
type setNode struct {
	literal []edge // the next characters (ASCII letters in lower case), sorted
	// ascii indexes literal by ASCII character (+1; 0 for none), for a
	// node with many edges.
	ascii    *[utf8.RuneSelf]int32
	any      int32    // the node after a `?` (-1: none)
	star     int32    // the node after a `*` (-1: none); it loops on every character
	loops    bool     // this node is reached by a `*`
	patterns []string // the patterns that end here, sorted (spelled apart, read alike: @a*:b, @a**:b)
}

// asciiTableEdges is how many edges make a node index them by character.
const asciiTableEdges = 8

// edge leads from a trie node to the node after one literal character.
type edge struct {
	r    rune
	node int32
}

// next returns the node after the literal character r, or -1.
func (n *setNode) next(r rune) int32 {
	if n.ascii != nil && r < utf8.RuneSelf {
		return n.ascii[r] - 1
	}
	if len(n.literal) <= asciiTableEdges {
		for _, e := range n.literal { // a scan of the few edges most nodes have
			if e.r == r {
				return e.node
			}
		}
		return -1
	}
	if i, ok := slices.BinarySearchFunc(n.literal, r, compareEdge); ok {
		return n.literal[i].node
	}
	return -1
}

func compareEdge(e edge, r rune) int { return int(e.r - r) }

// setScratch is one Match's working memory.
type setScratch struct {
	seen      []uint32 // seen[node] == gen: the node is in next
	gen       uint32
	cur, next []int32
}

// NewSet compiles patterns (duplicates are dropped). Match reports the
// first matching pattern in sorted order.
func NewSet(patterns []string) *Set {
	s := &Set{nodes: []setNode{newSetNode()}, live: map[string]struct{}{}}
	s.scratch.New = func() any { return &setScratch{} }
	for _, p := range patterns {
		s.Add(p)
	}
	return s
}

func newSetNode() setNode { return setNode{any: -1, star: -1} }

// foldPattern lower-cases a pattern's ASCII letters and collapses runs of
// `*` (which match what one does).
func foldPattern(p string) string {
	var sb strings.Builder
	for _, r := range p {
		if r == '*' && strings.HasSuffix(sb.String(), "*") {
			continue
		}
		sb.WriteRune(foldASCII(r))
	}
	return sb.String()
}

func foldASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}

// Add adds a pattern (a no-op when it is there).
func (s *Set) Add(p string) {
	if _, ok := s.live[p]; ok {
		return
	}
	s.live[p] = struct{}{}
	n := int32(0)
	for _, r := range foldPattern(p) {
		n = s.child(n, r)
	}
	node := &s.nodes[n]
	i, _ := slices.BinarySearch(node.patterns, p)
	node.patterns = slices.Insert(node.patterns, i, p)
}

// Remove removes a pattern (a no-op when it is not there). Its trie nodes
// stay, matching nothing more.
func (s *Set) Remove(p string) {
	if _, ok := s.live[p]; !ok {
		return
	}
	delete(s.live, p)
	n := int32(0)
	for _, r := range foldPattern(p) {
		node := &s.nodes[n]
		switch r {
		case '?':
			n = node.any
		case '*':
			n = node.star
		default:
			n = node.next(r)
		}
	}
	node := &s.nodes[n]
	if i, ok := slices.BinarySearch(node.patterns, p); ok {
		node.patterns = slices.Delete(node.patterns, i, i+1)
	}
}

// child returns node n's child for the pattern character r, made if new.
func (s *Set) child(n int32, r rune) int32 {
	var next *int32
	switch r {
	case '?':
		next = &s.nodes[n].any
	case '*':
		next = &s.nodes[n].star
	default:
		if c := s.nodes[n].next(r); c >= 0 {
			return c
		}
		c := int32(len(s.nodes))
		s.nodes = append(s.nodes, newSetNode())
		node := &s.nodes[n]
		i, _ := slices.BinarySearchFunc(node.literal, r, compareEdge)
		node.literal = slices.Insert(node.literal, i, edge{r, c})
		switch {
		case node.ascii != nil && r < utf8.RuneSelf:
			node.ascii[r] = c + 1
		case node.ascii == nil && len(node.literal) > asciiTableEdges:
			node.ascii = new([utf8.RuneSelf]int32)
			for _, e := range node.literal {
				if e.r < utf8.RuneSelf {
					node.ascii[e.r] = e.node + 1
				}
			}
		}
		return c
	}
	if *next >= 0 {
		return *next
	}
	c := int32(len(s.nodes))
	*next = c // before the append, which may move the nodes
	s.nodes = append(s.nodes, newSetNode())
	s.nodes[c].loops = r == '*'
	return c
}

// Patterns returns the patterns the set holds, sorted.
func (s *Set) Patterns() []string {
	return slices.Sorted(maps.Keys(s.live))
}

// Len returns how many patterns the set holds.
func (s *Set) Len() int { return len(s.live) }

// Match returns the first pattern (in sorted order) that the whole of user
// matches, and whether there is one.
func (s *Set) Match(user string) (string, bool) {
	if len(s.live) == 0 {
		return "", false
	}
	sc := s.scratch.Get().(*setScratch)
	defer s.scratch.Put(sc)
	if len(sc.seen) < len(s.nodes) {
		sc.seen = append(sc.seen, make([]uint32, len(s.nodes)-len(sc.seen))...)
	}
	sc.cur = sc.cur[:0]
	s.newGen(sc)
	sc.next = s.add(sc, sc.next[:0], 0)
	for i := 0; i < len(user) && len(sc.next) > 0; {
		r, size := utf8.DecodeRuneInString(user[i:])
		if size == 1 && r >= utf8.RuneSelf {
			r = utf8.RuneError // an invalid byte is a character no pattern has
		}
		i += size
		r = foldASCII(r)
		sc.cur, sc.next = sc.next, sc.cur[:0]
		s.newGen(sc)
		for _, n := range sc.cur {
			node := &s.nodes[n]
			if node.loops {
				sc.next = s.add(sc, sc.next, n)
			}
			if c := node.next(r); c >= 0 {
				sc.next = s.add(sc, sc.next, c)
			}
			if node.any >= 0 {
				sc.next = s.add(sc, sc.next, node.any)
			}
		}
	}
	best := ""
	for _, n := range sc.next {
		if ps := s.nodes[n].patterns; len(ps) > 0 && (best == "" || ps[0] < best) {
			best = ps[0]
		}
	}
	return best, best != ""
}

// newGen starts a new step: no node is in next yet.
func (s *Set) newGen(sc *setScratch) {
	sc.gen++
	if sc.gen == 0 { // wrapped: forget every mark
		clear(sc.seen)
		sc.gen = 1
	}
}

// add adds node n to next, and the `*` after it, which matches nothing too.
func (s *Set) add(sc *setScratch, next []int32, n int32) []int32 {
	for n >= 0 && sc.seen[n] != sc.gen {
		sc.seen[n] = sc.gen
		next = append(next, n)
		n = s.nodes[n].star
	}
	return next
}
