package docs

import (
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DoubledRun is the shortest run of consecutive words CheckDoubled
// reports: shorter runs are the phrases a name or an idiom makes ("the
// message is dead-lettered"), longer ones are a sentence written twice.
const DoubledRun = 8

// word is one word of a text and the line it is on.
type word struct {
	text string
	line int
}

// wordRE is what counts as a word: letters, digits, '_', '.', '/' and
// '\”, not ending in '.', '/' or '\” (so "fxbus.Publish" and a module
// path are one word each, and the full stop after them none).
var wordRE = regexp.MustCompile(`[\p{L}\p{N}_.'/]*[\p{L}\p{N}_]`)

// gap is a word no page has and docGap one no doc comment has: no run
// crosses either.
func gap(line int) word { return word{"\x00", line} }

func docGap(line int) word { return word{"\x01", line} }

// words splits lines (the first being line first) into lower-case words.
func words(lines []string, first int) []word {
	var out []word
	for i, l := range lines {
		for _, w := range wordRE.FindAllString(strings.ToLower(l), -1) {
			out = append(out, word{w, first + i})
		}
	}
	return out
}

// docWords returns the words of the package doc comment of a Go file,
// the comment markers stripped, with their lines. Directives
// (//go:build), code blocks and URLs (a link's target, as in a page)
// are not words.
func docWords(path string) ([]word, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.PackageClauseOnly|parser.ParseComments)
	if err != nil {
		return nil, err
	}
	if f.Doc == nil {
		return nil, nil
	}
	var out []word
	for _, c := range f.Doc.List {
		line := fset.Position(c.Pos()).Line
		text := c.Text
		switch {
		case strings.HasPrefix(text, "//go:"), strings.HasPrefix(text, "//line "):
			continue
		case strings.HasPrefix(text, "//\t"):
			out = append(out, docGap(line)) // a code block (gofmt indents them with a tab)
			continue
		case strings.HasPrefix(text, "//"):
			text = text[2:]
		default: // /* … */
			text = strings.TrimSuffix(strings.TrimPrefix(text, "/*"), "*/")
		}
		text = urlRE.ReplaceAllString(text, " ")
		out = append(out, words(strings.Split(text, "\n"), line)...)
	}
	return out, nil
}

// maxNameWords is the most words a code span of a page has and still
// reads as a name in its sentence (`fxbus.Route[OrderPlaced]("orders")`).
const maxNameWords = 3

// urlRE is a URL in a doc comment.
var urlRE = regexp.MustCompile(`https?://\S+`)

// markdownLinkTarget is the (target) of a [text](target) link: the text
// is prose, the target is not.
var markdownLinkTarget = regexp.MustCompile(`\]\([^)]*\)`)

// pageWords returns the prose words of a Markdown page with their lines:
// fenced code blocks, HTML comments (snippet markers, figures
// templates), generated figures regions, link targets and code spans of
// more than maxNameWords words are not prose.
func pageWords(path string) ([]word, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []word
	fence, inComment, inFigures := "", false, false
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		switch {
		case inFigures:
			inFigures = strings.TrimSpace(line) != figuresEnd
			continue
		case fence != "":
			if strings.TrimSpace(line) == fence {
				fence = ""
			}
			continue
		case !inComment && strings.HasPrefix(line, figuresOpen):
			inFigures = true
			out = append(out, gap(n))
			continue
		case !inComment:
			if m := fenceOpen.FindStringSubmatch(line); m != nil {
				fence = m[1]
				out = append(out, gap(n))
				continue
			}
		}
		// Drop HTML comments, which may span lines.
		var prose strings.Builder
		for line != "" {
			if inComment {
				_, after, ok := strings.Cut(line, "-->")
				if !ok {
					break // the rest of the line is in the comment
				}
				line, inComment = after, false
				continue
			}
			before, after, ok := strings.Cut(line, "<!--")
			prose.WriteString(before)
			if ok {
				prose.WriteByte(0) // a gap
			}
			line, inComment = after, ok
		}
		text := markdownLinkTarget.ReplaceAllString(prose.String(), "]")
		for i, seg := range strings.Split(text, "\x00") {
			if i > 0 {
				out = append(out, gap(n))
			}
			out = append(out, spanWords(seg, n)...)
		}
	}
	return out, nil
}

// spanWords is words for a line of Markdown: a code span of a few words
// is a name in a sentence; a longer one (a quoted message, a command, an
// expression) is not prose, and no run crosses it.
func spanWords(text string, line int) []word {
	var out []word
	for {
		loc := codeSpanRE.FindStringIndex(text)
		if loc == nil {
			return append(out, words([]string{text}, line)...)
		}
		out = append(out, words([]string{text[:loc[0]]}, line)...)
		if span := words([]string{text[loc[0]:loc[1]]}, line); len(span) > maxNameWords {
			out = append(out, gap(line))
		} else {
			out = append(out, span...)
		}
		text = text[loc[1]:]
	}
}

// DocFiles returns the doc.go files under root (relative to it, sorted),
// testdata and hidden folders aside.
func DocFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "doc.go" {
			rel, _ := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

// Doubled is a run of words a package doc and a page share.
type Doubled struct {
	Doc, Page         string // relative to root
	DocLine, PageLine int    // where the run starts in each
	Words             []string
}

// FindDoubled returns every maximal run of at least n consecutive words
// that a doc.go file's package comment (docFiles) shares with a page
// (pages), both relative to root.
func FindDoubled(root string, docFiles, pages []string, n int) ([]Doubled, error) {
	type gram struct {
		page string
		at   int // index of its first word in the page
	}
	grams := map[string]gram{} // n words joined → where it first occurs
	inPage := map[string][]word{}
	for _, p := range pages {
		ws, err := pageWords(filepath.Join(root, p))
		if err != nil {
			return nil, err
		}
		inPage[p] = ws
		for i := 0; i+n <= len(ws); i++ {
			k := join(ws[i : i+n])
			if _, ok := grams[k+"\x00"+p]; !ok {
				grams[k+"\x00"+p] = gram{p, i}
			}
		}
	}
	var out []Doubled
	for _, d := range docFiles {
		ws, err := docWords(filepath.Join(root, d))
		if err != nil {
			return nil, err
		}
		for _, p := range pages {
			// Windows of ws found in p; a run is consecutive windows.
			for i := 0; i+n <= len(ws); {
				g, ok := grams[join(ws[i:i+n])+"\x00"+p]
				if !ok {
					i++
					continue
				}
				j := i + 1
				for j+n <= len(ws) {
					if _, ok := grams[join(ws[j:j+n])+"\x00"+p]; !ok {
						break
					}
					j++
				}
				run := make([]string, 0, j-1+n-i)
				for _, w := range ws[i : j-1+n] {
					run = append(run, w.text)
				}
				out = append(out, Doubled{d, p, ws[i].line, inPage[p][g.at].line, run})
				i = j
			}
		}
	}
	return out, nil
}

func join(ws []word) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = w.text
	}
	return strings.Join(s, " ")
}

// CheckDoubled fails on every run of DoubledRun or more words that a
// package doc comment (every doc.go under root) and a page of docs/
// both say: the package doc is the reference (what a call does, its
// guarantees, errors and defaults), the page the walkthrough, the
// reasons and the advice, and each links to the other rather than
// repeating it.
func CheckDoubled(root string, pages []string) []Problem {
	docFiles, err := DocFiles(root)
	if err != nil {
		return []Problem{{root, err.Error()}}
	}
	var inDocs []string
	for _, p := range pages {
		if strings.HasPrefix(filepath.ToSlash(p), "docs/") {
			inDocs = append(inDocs, p)
		}
	}
	found, err := FindDoubled(root, docFiles, inDocs, DoubledRun)
	if err != nil {
		return []Problem{{root, err.Error()}}
	}
	var problems []Problem
	for _, d := range found {
		problems = append(problems, Problem{
			fmt.Sprintf("%s:%d", d.Doc, d.DocLine),
			fmt.Sprintf("%d words also in %s:%d: %q: say it in one place, the API and its semantics in the package doc, "+
				"the walkthrough, reasons and advice in the page, and link to it from the other", len(d.Words), d.Page, d.PageLine, strings.Join(d.Words, " ")),
		})
	}
	return problems
}
