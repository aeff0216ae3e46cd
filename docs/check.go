package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// Problem is one thing a check found wrong, where it is and what to do.
type Problem struct {
	Where string // page:line, or a source file
	What  string
}

func (p Problem) String() string { return p.Where + ": " + p.What }

// Pages returns the pages the checks read: README.md and docs/*.md,
// relative to root.
func Pages(root string) ([]string, error) {
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	for i, p := range pages {
		pages[i], _ = filepath.Rel(root, p)
	}
	sort.Strings(pages)
	if _, err := os.Stat(filepath.Join(root, "README.md")); err == nil {
		pages = append([]string{"README.md"}, pages...)
	}
	return pages, nil
}

var (
	snippetMarker = regexp.MustCompile(`^<!--\s*snippet:\s*(\S+?)#(\S+)\s*-->\s*$`)
	fenceOpen     = regexp.MustCompile("^\\s*(```+|~~~+)\\s*([A-Za-z0-9_+-]*)")
)

// CheckSnippets compares each Go block of the pages with the region of
// the source file its marker names. Every ```go block must have a marker
// on the line before it (blank lines allowed between). It returns the
// problems and, for each page whose blocks differ, the page as it would
// read with the source's regions in place (for -update).
func CheckSnippets(root string, pages []string) ([]Problem, map[string]string) {
	var problems []Problem
	fixed := map[string]string{}
	for _, page := range pages {
		data, err := os.ReadFile(filepath.Join(root, page))
		if err != nil {
			problems = append(problems, Problem{page, err.Error()})
			continue
		}
		lines := strings.Split(string(data), "\n")
		var out []string
		changed := false
		var marker []string // the last marker seen, until a block or text
		for i := 0; i < len(lines); i++ {
			line := lines[i]
			if m := snippetMarker.FindStringSubmatch(line); m != nil {
				marker = m
				out = append(out, line)
				continue
			}
			f := fenceOpen.FindStringSubmatch(line)
			if f == nil {
				if strings.TrimSpace(line) != "" {
					marker = nil
				}
				out = append(out, line)
				continue
			}
			// A fenced block: find its end.
			end := i + 1
			for end < len(lines) && strings.TrimSpace(lines[end]) != f[1] {
				end++
			}
			body := lines[i+1 : min(end, len(lines))]
			where := fmt.Sprintf("%s:%d", page, i+1)
			if f[2] == "go" {
				if marker == nil {
					problems = append(problems, Problem{where, "a ```go block without a `<!-- snippet: path/to/file.go#name -->` line before it: " +
						"put the code in a tested file between `// snippet:name` and `// end snippet` (or in an Example function) and name it in a marker"})
				} else if want, err := Region(root, marker[1], marker[2]); err != nil {
					problems = append(problems, Problem{where, err.Error()})
				} else {
					got := normalise(body)
					if got != want {
						problems = append(problems, Problem{where, fmt.Sprintf(
							"the snippet differs from %s#%s; the source is right (it builds and runs): "+
								"run `go test -run TestSnippets -update` in docs/ to copy it into the page, "+
								"or change the source first if the page was the one meant\n%s",
							marker[1], marker[2], diff(want, got))})
						out = append(out, line)
						out = append(out, strings.Split(want, "\n")...)
						changed = true
						if end < len(lines) {
							out = append(out, lines[end])
						}
						i = end
						marker = nil
						continue
					}
				}
			}
			out = append(out, lines[i:min(end+1, len(lines))]...)
			i = end
			marker = nil
		}
		if changed {
			fixed[page] = strings.Join(out, "\n")
		}
	}
	return problems, fixed
}

// Region returns the lines of file (relative to root) between
// `// snippet:name` and `// end snippet`, without their common
// indentation; or, when name is an Example function's and no such marker
// exists, the whole function.
func Region(root, file, name string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
	if err != nil {
		return "", fmt.Errorf("snippet %s#%s: %w (the marker names a file that does not exist)", file, name, err)
	}
	lines := strings.Split(string(data), "\n")
	start := -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if start < 0 && t == "// snippet:"+name {
			start = i + 1
			continue
		}
		if start >= 0 && t == "// end snippet" {
			return normalise(lines[start:i]), nil
		}
	}
	if start >= 0 {
		return "", fmt.Errorf("snippet %s#%s: `// snippet:%s` has no `// end snippet` after it", file, name, name)
	}
	if strings.HasPrefix(name, "Example") {
		for i, l := range lines {
			if strings.HasPrefix(l, "func "+name+"()") {
				for j := i + 1; j < len(lines); j++ {
					if lines[j] == "}" {
						return normalise(lines[i : j+1]), nil
					}
				}
			}
		}
	}
	return "", fmt.Errorf("snippet %s#%s: the file has no `// snippet:%s` … `// end snippet` region (nor an Example function of that name)", file, name, name)
}

// normalise drops leading and trailing blank lines, trailing spaces and
// the indentation every line shares.
func normalise(lines []string) string {
	ls := make([]string, len(lines))
	for i, l := range lines {
		ls[i] = strings.TrimRightFunc(l, unicode.IsSpace)
	}
	for len(ls) > 0 && ls[0] == "" {
		ls = ls[1:]
	}
	for len(ls) > 0 && ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	indent := ""
	first := true
	for _, l := range ls {
		if l == "" {
			continue
		}
		lead := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if first {
			indent, first = lead, false
			continue
		}
		for !strings.HasPrefix(lead, indent) {
			indent = indent[:len(indent)-1]
		}
	}
	for i, l := range ls {
		ls[i] = strings.TrimPrefix(l, indent)
	}
	return strings.Join(ls, "\n")
}

// diff shows the first line where the source (want) and the page (got)
// part, with a little context.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  first difference at line %d of the snippet:\n", i+1)
	for j := max(0, i-2); j < i; j++ {
		fmt.Fprintf(&b, "      %s\n", w[j])
	}
	for j := i; j < min(len(w), i+3); j++ {
		fmt.Fprintf(&b, "    - %s   (source)\n", w[j])
	}
	for j := i; j < min(len(g), i+3); j++ {
		fmt.Fprintf(&b, "    + %s   (page)\n", g[j])
	}
	return b.String()
}

var (
	linkRE     = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	codeSpanRE = regexp.MustCompile("`+[^`]*`+")
	headingRE  = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	anchorTag  = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
)

// CheckLinks checks that every relative link of the pages names a file
// or folder of the repository, and that every #anchor names a heading of
// the page it points into. Links with a scheme (https:, mailto:) are not
// followed: the check runs offline.
func CheckLinks(root string, pages []string) []Problem {
	var problems []Problem
	anchors := map[string]map[string]bool{}
	for _, page := range pages {
		f, err := os.Open(filepath.Join(root, page))
		if err != nil {
			problems = append(problems, Problem{page, err.Error()})
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n, fence := 0, ""
		for sc.Scan() {
			n++
			line := sc.Text()
			if fence != "" {
				if strings.TrimSpace(line) == fence {
					fence = ""
				}
				continue
			}
			if m := fenceOpen.FindStringSubmatch(line); m != nil {
				fence = m[1]
				continue
			}
			for _, m := range linkRE.FindAllStringSubmatch(codeSpanRE.ReplaceAllString(line, ""), -1) {
				if p := checkLink(root, page, m[1], anchors); p != "" {
					problems = append(problems, Problem{fmt.Sprintf("%s:%d", page, n), p})
				}
			}
		}
		_ = f.Close()
	}
	return problems
}

func checkLink(root, page, target string, anchors map[string]map[string]bool) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	path, frag, _ := strings.Cut(target, "#")
	file := page
	if path != "" {
		file = filepath.Join(filepath.Dir(page), filepath.FromSlash(path))
		if strings.HasPrefix(filepath.Clean(file), "..") {
			return fmt.Sprintf("link %q leaves the repository", target)
		}
		if _, err := os.Stat(filepath.Join(root, file)); err != nil {
			return fmt.Sprintf("link %q points at %s, which does not exist: fix the path (relative to %s) or drop the link", target, filepath.ToSlash(file), filepath.Dir(page))
		}
	}
	if frag == "" || !strings.HasSuffix(file, ".md") {
		return ""
	}
	a, ok := anchors[file]
	if !ok {
		a = Anchors(root, file)
		anchors[file] = a
	}
	if !a[frag] {
		return fmt.Sprintf("link %q: %s has no heading whose anchor is #%s (anchors are GitHub's: the heading in lower case, spaces as -, punctuation dropped)", target, filepath.ToSlash(file), frag)
	}
	return ""
}

// Anchors returns the anchors GitHub makes for a Markdown file's
// headings (and explicit <a id> tags).
func Anchors(root, file string) map[string]bool {
	out := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return out
	}
	seen := map[string]int{}
	fence := ""
	for _, line := range strings.Split(string(data), "\n") {
		if fence != "" {
			if strings.TrimSpace(line) == fence {
				fence = ""
			}
			continue
		}
		if m := fenceOpen.FindStringSubmatch(line); m != nil {
			fence = m[1]
			continue
		}
		for _, m := range anchorTag.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := Slug(m[1])
		if k := seen[s]; k > 0 {
			out[fmt.Sprintf("%s-%d", s, k)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

var mdLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// Slug is GitHub's anchor for a heading's text.
func Slug(heading string) string {
	heading = mdLink.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsNumber(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// RepoURL is the prefix of a link into the repository from a package's
// documentation, which pkg.go.dev shows away from the repository.
const RepoURL = "https://github.com/fxcqrs/fxcqrs/blob/main/"

var repoLinkRE = regexp.MustCompile(regexp.QuoteMeta(RepoURL) + `([^\s)#]+)(?:#([\w-]+))?`)

// CheckDocGoLinks checks that every link of a doc.go file (found under
// root, anywhere) into the repository (RepoURL) names a file that exists,
// and a heading of it when it has an #anchor.
func CheckDocGoLinks(root string) []Problem {
	var problems []Problem
	anchors := map[string]map[string]bool{}
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() != "doc.go" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range repoLinkRE.FindAllStringSubmatch(line, -1) {
				target := strings.TrimRight(m[1], ".,;:")
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
					problems = append(problems, Problem{fmt.Sprintf("%s:%d", filepath.ToSlash(rel), i+1), fmt.Sprintf("link %s%s: %s does not exist in the repository", RepoURL, target, target)})
					continue
				}
				if m[2] == "" || !strings.HasSuffix(target, ".md") {
					continue
				}
				a, ok := anchors[target]
				if !ok {
					a = Anchors(root, target)
					anchors[target] = a
				}
				if !a[m[2]] {
					problems = append(problems, Problem{fmt.Sprintf("%s:%d", filepath.ToSlash(rel), i+1), fmt.Sprintf("link to %s#%s: no such heading", target, m[2])})
				}
			}
		}
		return nil
	})
	return problems
}
