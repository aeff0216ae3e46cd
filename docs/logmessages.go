package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// notLibrary are the folders whose logs are not a running service's: the
// test kit, the command line, the examples, the benchmarks, these docs.
var notLibrary = map[string]bool{
	".git": true, "examples": true, "benchmarks": true, "cmd": true, "docs": true,
	"fxcqrstest": true, "testdata": true, "outboxtest": true, "brokertest": true, "bustest": true,
}

// LogMessage is a message the library logs at warn or error level.
type LogMessage struct {
	Key   string // the message's constant start, as troubleshooting.md quotes it
	Level string // "warn" or "error"
	Where string
}

// LogMessages enumerates the messages the library's non-test files log
// with a Warn or Error method whose message is a string literal (or
// starts with one: "circuit breaker " + name). It sees every such call,
// and only those: a message held in a variable, or logged through
// another method, escapes it.
func LogMessages(root string) ([]LogMessage, error) {
	var out []LogMessage
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && notLibrary[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return fmt.Errorf("docs: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Warn" && sel.Sel.Name != "Error" {
				return true
			}
			arg := call.Args[0]
			for {
				b, ok := arg.(*ast.BinaryExpr)
				if !ok || b.Op != token.ADD {
					break
				}
				arg = b.X
			}
			lit, ok := arg.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			msg, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			pos := fset.Position(call.Pos())
			rel, _ := filepath.Rel(root, pos.Filename)
			out = append(out, LogMessage{
				Key:   strings.TrimRight(msg, " :;"),
				Level: strings.ToLower(sel.Sel.Name),
				Where: fmt.Sprintf("%s:%d", filepath.ToSlash(rel), pos.Line),
			})
			return true
		})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, err
}

// CheckLogMessages checks both ways that troubleshooting.md's table
// under "Conditions logged at warn or error" has a row for each logged
// message, and none for a message the code no longer logs.
func CheckLogMessages(root string, msgs []LogMessage) []Problem {
	keys, err := sectionKeys(filepath.Join(root, "docs", "troubleshooting.md"), "Conditions logged at warn or error")
	if err != nil {
		return []Problem{{"docs/troubleshooting.md", err.Error()}}
	}
	var problems []Problem
	known := map[string]bool{}
	for _, m := range msgs {
		if known[m.Key] {
			continue
		}
		known[m.Key] = true
		if _, ok := keys[m.Key]; !ok {
			problems = append(problems, Problem{m.Where, fmt.Sprintf("the %s-level log %q has no row in docs/troubleshooting.md's \"Conditions logged at warn or error\" table: add `| `%s` | %s | what it means | what to do |`", m.Level, m.Key, m.Key, m.Level)})
		}
	}
	for k, line := range keys {
		if !known[k] {
			problems = append(problems, Problem{fmt.Sprintf("docs/troubleshooting.md:%d", line), fmt.Sprintf("the row for %q names no message the code still logs: update or drop it", k)})
		}
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].Where < problems[j].Where })
	return problems
}
