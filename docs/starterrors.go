package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// StartPackages are the folders (relative to the repository's root)
// whose start path is enumerated: the packages an application wires
// into fx. The test kit, the command line, the examples and the
// benchmarks are left out: they are not started by a service.
var StartPackages = []string{
	".",
	"fxbus", "fxbus/natsjs", "fxbus/amqpbus", "fxbus/redisbus", "fxbus/kafkabus",
	"fxoutbox",
	"fxsaga",
	"fxcqrsotel", "fxcqrsotel/otelbus", "fxcqrsotel/otelops",
	"fxconsole",
}

// startRoots are the functions where a start begins: what fx.New calls
// (the modules' providers, the constructors, the option helpers that
// validate as the graph is built) and what fx.Start calls (Start, and
// the function literals given to fx.Hook's OnStart).
var startRoots = regexp.MustCompile(`^(New\w*|Module\w*|module\w*|provide\w*|Start|Validate|validate\w*|Migrate|Define|Route|Subscribe|Register|Resume|Durable|Schedulable|Provision)$`)

// StartError is one error message a start path can return.
type StartError struct {
	Key    string // the message's stable prefix, as troubleshooting.md quotes it
	Format string // the whole format string
	Where  string // file:line
	Func   string // the function it is made in
}

// StartErrors enumerates the error messages the start path of
// StartPackages can return. It is static and approximate, and says so:
// from each root (startRoots) it follows calls to functions and methods
// of the same package by name, not crossing a `go` statement (what a
// goroutine returns is not a start error), and collects every
// fmt.Errorf / errors.New whose message is a string literal. It cannot
// see errors made in another package (a driver's, Watermill's, fx's
// own), messages built at run time, or calls through an interface or a
// function value; a method shares its name with every method of the
// package so named, which over-approximates.
func StartErrors(root string) ([]StartError, error) {
	var out []StartError
	for _, dir := range StartPackages {
		errs, err := packageStartErrors(root, dir)
		if err != nil {
			return nil, err
		}
		out = append(out, errs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func packageStartErrors(root, dir string) ([]StartError, error) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
	if err != nil {
		return nil, err
	}
	funcs := map[string][]*ast.FuncDecl{}
	var hooks []*ast.FuncLit
	var hookMethods []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, fmt.Errorf("docs: %w", err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				funcs[fd.Name.Name] = append(funcs[fd.Name.Name], fd)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if kv, ok := n.(*ast.KeyValueExpr); ok {
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "OnStart" {
					switch v := kv.Value.(type) {
					case *ast.FuncLit:
						hooks = append(hooks, v)
					case *ast.SelectorExpr: // OnStart: loop.start
						hookMethods = append(hookMethods, v.Sel.Name)
					}
				}
			}
			return true
		})
	}
	if len(funcs) == 0 {
		return nil, nil // a package not on this branch (yet)
	}
	visited := map[*ast.FuncDecl]bool{}
	var out []StartError
	var walk func(body ast.Node, fn string)
	walk = func(body ast.Node, fn string) {
		ast.Inspect(body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				return false
			case *ast.CallExpr:
				if msg, ok := errorLiteral(n); ok {
					pos := fset.Position(n.Pos())
					rel, _ := filepath.Rel(root, pos.Filename)
					if !meaningful(Key(msg)) {
						return true // a fragment another message wraps
					}
					out = append(out, StartError{Key: Key(msg), Format: msg, Where: fmt.Sprintf("%s:%d", filepath.ToSlash(rel), pos.Line), Func: fn})
				}
				var name string
				switch f := n.Fun.(type) {
				case *ast.Ident:
					name = f.Name
				case *ast.SelectorExpr:
					name = f.Sel.Name
				case *ast.IndexExpr: // a generic call
					if id, ok := f.X.(*ast.Ident); ok {
						name = id.Name
					}
				case *ast.IndexListExpr:
					if id, ok := f.X.(*ast.Ident); ok {
						name = id.Name
					}
				}
				for _, fd := range funcs[name] {
					if !visited[fd] {
						visited[fd] = true
						walk(fd.Body, fd.Name.Name)
					}
				}
			case *ast.SelectorExpr: // a method value handed to fx (OnStart: o.Start)
				for _, fd := range funcs[n.Sel.Name] {
					if n.Sel.Name == "Start" && !visited[fd] {
						visited[fd] = true
						walk(fd.Body, fd.Name.Name)
					}
				}
			}
			return true
		})
	}
	isHook := map[string]bool{}
	for _, m := range hookMethods {
		isHook[m] = true
	}
	for name, fds := range funcs {
		if !startRoots.MatchString(name) && !isHook[name] {
			continue
		}
		for _, fd := range fds {
			if !visited[fd] {
				visited[fd] = true
				walk(fd.Body, fd.Name.Name)
			}
		}
	}
	for _, h := range hooks {
		walk(h.Body, "OnStart")
	}
	return out, nil
}

// errorLiteral reports the message of fmt.Errorf("…") or errors.New("…").
func errorLiteral(call *ast.CallExpr) (string, bool) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || len(call.Args) == 0 {
		return "", false
	}
	pkg, ok := sel.X.(*ast.Ident)
	if !ok {
		return "", false
	}
	if isErr := pkg.Name == "fmt" && sel.Sel.Name == "Errorf" || pkg.Name == "errors" && sel.Sel.Name == "New"; !isErr {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return "", false
	}
	return s, true
}

// meaningful says whether a key has enough words of its own to be
// looked up: "nil" or "…: …" are fragments that another message wraps.
func meaningful(key string) bool {
	n := 0
	for _, r := range key {
		if unicode.IsLetter(r) {
			n++
		}
	}
	return n >= 10
}

var verb = regexp.MustCompile(`%[-+# 0-9.*\[\]]*[a-zA-Z]`)

// Key is a message's stable prefix: the format with each verb as "…",
// up to the first verb after the API's name (the part before the first
// ": "), or the whole message when that leaves only the name.
func Key(format string) string {
	format = strings.ReplaceAll(format, "%%", "%")
	norm := verb.ReplaceAllString(format, "…")
	api, rest, found := strings.Cut(norm, ": ")
	if !found {
		api, rest = "", norm
	}
	if i := strings.Index(rest, "…"); i >= 0 {
		cut := strings.TrimRight(rest[:i], " :,(")
		if len([]rune(cut)) >= 8 {
			rest = cut
		}
	}
	if api == "" {
		return strings.TrimSpace(rest)
	}
	return api + ": " + strings.TrimSpace(rest)
}

// sectionKeys returns the code spans of the first column of the table
// rows under the "## "+heading of page, up to the next "## " heading.
func sectionKeys(page, heading string) (map[string]int, error) {
	data, err := os.ReadFile(page)
	if err != nil {
		return nil, err
	}
	keys := map[string]int{}
	in := false
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == heading
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.TrimPrefix(line, "| ")
		cell = cell[:strings.Index(cell+" |", " |")]
		for _, span := range codeSpanRE.FindAllString(cell, -1) {
			keys[strings.Trim(span, "`")] = i + 1
		}
	}
	return keys, nil
}

// CheckTroubleshooting checks both ways that troubleshooting.md's
// "Start errors" table has a row for each start error's key and no row
// for a key the code no longer has.
func CheckTroubleshooting(root string, errs []StartError) []Problem {
	page := filepath.Join(root, "docs", "troubleshooting.md")
	keys, err := sectionKeys(page, "Start errors")
	if err != nil {
		return []Problem{{"docs/troubleshooting.md", err.Error()}}
	}
	var problems []Problem
	known := map[string]bool{}
	for _, e := range errs {
		if known[e.Key] {
			continue
		}
		known[e.Key] = true
		if _, ok := keys[e.Key]; !ok {
			problems = append(problems, Problem{e.Where, fmt.Sprintf("the start error %q (in %s) has no row in docs/troubleshooting.md's \"Start errors\" table: "+
				"add `| `%s` | what it means | what to do |`", e.Format, e.Func, e.Key)})
		}
	}
	for k, line := range keys {
		if !known[k] {
			problems = append(problems, Problem{fmt.Sprintf("docs/troubleshooting.md:%d", line), fmt.Sprintf("the row for %q names no error the start path still returns: "+
				"the code changed its message (update the key) or no longer returns it (drop the row)", k)})
		}
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].Where < problems[j].Where })
	return problems
}
