package userid

import (
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Set is a compiled set of patterns that matches a user ID against all of
// them in one pass: the patterns share a trie, and matching walks it with
// the set of trie nodes the user ID's prefix can be at (a nondeterministic
// automaton), so its cost grows with the user ID's length and the nodes
// alive at once, not with the number of patterns (BENCHMARKS.md). It is
// the one pattern matcher of production code. Its reading of a pattern:
// `*` any run of characters, `?` exactly one, every other character itself,
// over the whole user ID. Its case rule, everywhere in presence-router:
// ASCII letters match regardless of case (A-Z and a-z), and every other
// character matches only itself. User IDs are ASCII by the specification's
// grammar; a non-ASCII character in one never matches an ASCII letter of a
// pattern (Unicode folding would let the Kelvin sign match k and the long s
// match s). A Set is safe for concurrent use.
type Set struct {
	nodes    []setNode
	patterns []string // sorted; a node's pattern indexes it
	scratch  sync.Pool
}

// setNode is one trie node: what follows a prefix of one or more patterns.
type setNode struct {
	literal []edge // the next characters (ASCII letters in lower case), sorted
	// ascii indexes literal by ASCII character (+1; 0 for none), for a
	// node with many edges.
	ascii   *[utf8.RuneSelf]int32
	any     int32 // the node after a `?` (-1: none)
	star    int32 // the node after a `*` (-1: none); it loops on every character
	loops   bool  // this node is reached by a `*`
	pattern int32 // the pattern that ends here (-1: none)
}

// edge leads from a trie node to the node after one literal character.
type edge struct {
	r    rune
	node int32
}

// next returns the node after the literal character r, or -1: a scan of
// the few edges most nodes have, a binary search of many.
func (n *setNode) next(r rune) int32 {
	if n.ascii != nil && r < utf8.RuneSelf {
		return n.ascii[r] - 1
	}
	if len(n.literal) <= 8 {
		for _, e := range n.literal {
			if e.r == r {
				return e.node
			}
		}
		return -1
	}
	if i, ok := slices.BinarySearchFunc(n.literal, r, func(e edge, r rune) int { return int(e.r - r) }); ok {
		return n.literal[i].node
	}
	return -1
}

// setScratch is one Match's working memory.
type setScratch struct {
	seen      []uint32 // seen[node] == gen: the node is in next
	gen       uint32
	cur, next []int32
}

// NewSet compiles patterns (duplicates are dropped). Match reports the
// first matching pattern in sorted order.
func NewSet(patterns []string) *Set {
	sorted := slices.Clone(patterns)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	s := &Set{patterns: sorted, nodes: []setNode{newSetNode()}}
	for i, p := range sorted {
		n := int32(0)
		for _, r := range foldPattern(p) {
			n = s.child(n, r)
		}
		if s.nodes[n].pattern < 0 {
			s.nodes[n].pattern = int32(i)
		}
	}
	for i := range s.nodes {
		if n := &s.nodes[i]; len(n.literal) > 8 {
			n.ascii = new([utf8.RuneSelf]int32)
			for _, e := range n.literal {
				if e.r < utf8.RuneSelf {
					n.ascii[e.r] = e.node + 1
				}
			}
		}
	}
	s.scratch.New = func() any { return &setScratch{seen: make([]uint32, len(s.nodes))} }
	return s
}

func newSetNode() setNode { return setNode{any: -1, star: -1, pattern: -1} }

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

// child returns node n's child for the pattern character r, made if new.
func (s *Set) child(n int32, r rune) int32 {
	node := &s.nodes[n]
	var next *int32
	switch r {
	case '?':
		next = &node.any
	case '*':
		next = &node.star
	default:
		i, ok := slices.BinarySearchFunc(node.literal, r, func(e edge, r rune) int { return int(e.r - r) })
		if ok {
			return node.literal[i].node
		}
		c := int32(len(s.nodes))
		node.literal = slices.Insert(node.literal, i, edge{r, c})
		s.nodes = append(s.nodes, newSetNode())
		return c
	}
	if *next >= 0 {
		return *next
	}
	c := int32(len(s.nodes))
	*next = c
	s.nodes = append(s.nodes, newSetNode())
	s.nodes[c].loops = r == '*'
	return c
}

// Len returns how many distinct patterns the set holds.
func (s *Set) Len() int { return len(s.patterns) }

// Match returns the first pattern (in sorted order) that the whole of user
// matches, and whether there is one.
func (s *Set) Match(user string) (string, bool) {
	if len(s.patterns) == 0 {
		return "", false
	}
	sc := s.scratch.Get().(*setScratch)
	defer s.scratch.Put(sc)
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
	best := int32(-1)
	for _, n := range sc.next {
		if p := s.nodes[n].pattern; p >= 0 && (best < 0 || p < best) {
			best = p
		}
	}
	if best < 0 {
		return "", false
	}
	return s.patterns[best], true
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
