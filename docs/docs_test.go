package docs

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "copy each drifted snippet's source region into its page")

// root is the repository, one folder up.
const root = ".."

func pages(t *testing.T) []string {
	t.Helper()
	p, err := Pages(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) < 2 {
		t.Fatalf("found %d pages under %s: README.md and docs/*.md expected", len(p), root)
	}
	return p
}

// TestSnippets fails when a page's Go snippet is not the region of the
// tested file its marker names. Fix: `go test -run TestSnippets -update`
// in docs/ copies the sources into the pages.
func TestSnippets(t *testing.T) {
	problems, fixed := CheckSnippets(root, pages(t))
	report(t, problems, fixed)
}

// report fails t with each problem, or with -update writes the pages
// as they should read instead.
func report(t *testing.T, problems []Problem, fixed map[string]string) {
	t.Helper()
	if *update {
		for page, text := range fixed {
			if err := os.WriteFile(filepath.Join(root, page), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("updated %s", page)
		}
		return
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestLinks fails when a relative link or an #anchor of README.md or
// docs/*.md points nowhere.
func TestLinks(t *testing.T) {
	for _, p := range CheckLinks(root, pages(t)) {
		t.Error(p)
	}
}

// TestFigures fails when a figures region of a page is not what its
// results file gives (see docs/perf.go). Fix: `go test -run TestFigures
// -update` in docs/ after `make bench-figures`.
func TestFigures(t *testing.T) {
	problems, fixed := CheckFigures(root, pages(t))
	report(t, problems, fixed)
	if *update { // what -update cannot fix: a template that fails
		problems, _ = CheckFigures(root, pages(t))
		for _, p := range problems {
			t.Error(p)
		}
	}
}

// TestTypedFigures fails when a page states a measurement outside a
// figures region.
func TestTypedFigures(t *testing.T) {
	for _, p := range CheckTypedFigures(root, pages(t)) {
		t.Error(p)
	}
}

// TestDocGoLinks fails when a package's doc.go links to a page or file of
// the repository that is not there.
func TestDocGoLinks(t *testing.T) {
	for _, p := range CheckDocGoLinks(root) {
		t.Error(p)
	}
}

// TestTroubleshooting fails when an error the start path can return has
// no row in docs/troubleshooting.md, or a row names an error that is
// gone. See StartErrors for what the enumeration sees and what it cannot.
func TestTroubleshooting(t *testing.T) {
	errs, err := StartErrors(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) < 20 {
		t.Fatalf("the enumeration found %d start errors: it has stopped seeing the code", len(errs))
	}
	for _, p := range CheckTroubleshooting(root, errs) {
		t.Error(p)
	}
}

// TestLogMessages fails when a message the library logs at warn or error
// level has no row in docs/troubleshooting.md, or a row's message is gone.
func TestLogMessages(t *testing.T) {
	msgs, err := LogMessages(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 20 {
		t.Fatalf("found %d logged messages: the enumeration has stopped seeing the code", len(msgs))
	}
	for _, p := range CheckLogMessages(root, msgs) {
		t.Error(p)
	}
}

// TestNothingDoubled fails when a package doc comment and a page of
// docs/ share a run of DoubledRun words or more: the text lives in one
// place, and the other links to it.
func TestNothingDoubled(t *testing.T) {
	for _, p := range CheckDoubled(root, pages(t)) {
		t.Error(p)
	}
}

// The checks on a broken fixture: each must fail, and say what to do.

const fixture = "testdata/broken"

func TestSnippetCheckFailsOnDrift(t *testing.T) {
	problems, fixed := CheckSnippets(fixture, []string{"docs/page.md"})
	want := []string{
		"docs/page.md:5: the snippet differs from src/a.go#greet", // drifted
		"docs/page.md:11: a ```go block without a `<!-- snippet:", // unmarked
		"docs/page.md:16: snippet src/a.go#gone: the file has no", // no region
		"docs/page.md:21: snippet src/missing.go#x: open",         // no file
	}
	assertProblems(t, problems, want)
	if !strings.Contains(problems[0].What, `- fmt.Println("hello")   (source)`) || !strings.Contains(problems[0].What, "-update") {
		t.Errorf("the drift's message has no diff or no fix: %s", problems[0].What)
	}
	if !strings.Contains(fixed["docs/page.md"], "fmt.Println(\"hello\")") {
		t.Errorf("-update would not copy the source into the page:\n%s", fixed["docs/page.md"])
	}
	// The example function is taken whole, and matches.
	if _, err := Region(fixture, "src/a.go", "ExampleGreet"); err != nil {
		t.Error(err)
	}
}

func TestLinkCheckFailsOnDeadLinks(t *testing.T) {
	problems := CheckLinks(fixture, []string{"README.md", "docs/page.md"})
	assertProblems(t, problems, []string{
		`README.md:3: link "docs/nowhere.md" points at docs/nowhere.md, which does not exist`,
		`README.md:4: link "docs/page.md#no-such-heading": docs/page.md has no heading whose anchor is #no-such-heading`,
		`README.md:5: link "#missing": README.md has no heading`,
		`docs/page.md:25: link "../../../../outside.md" leaves the repository`,
	})
}

func TestDocGoLinkCheckFailsOnDeadLinks(t *testing.T) {
	assertProblems(t, CheckDocGoLinks(fixture), []string{
		"lib/doc.go:3: link https://github.com/fxcqrs/fxcqrs/blob/main/docs/gone.md: docs/gone.md does not exist",
		"lib/doc.go:4: link to docs/page.md#nowhere: no such heading",
	})
}

func TestTroubleshootingCheckFailsBothWays(t *testing.T) {
	errs, err := packageStartErrors(fixture, "lib")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range errs {
		keys = append(keys, e.Key)
	}
	// runtime's error is after a go statement; wrapped's "nil" is a fragment.
	if strings.Join(keys, "|") != "lib.New: the name is empty|lib: start: no broker at" && strings.Join(keys, "|") != "lib: start: no broker at|lib.New: the name is empty" {
		t.Fatalf("enumerated %q", keys)
	}
	problems := CheckTroubleshooting(fixture, errs)
	assertProblems(t, problems, []string{
		`docs/troubleshooting.md:7: the row for "lib.Old: gone" names no error`,
		`lib/lib.go:`, // lib: start: no broker at has no row
	})
	if !strings.Contains(problems[1].What, `"lib: start: no broker at %s"`) {
		t.Errorf("the missing row's problem does not name the message: %s", problems[1])
	}
}

func TestLogMessageCheckFailsBothWays(t *testing.T) {
	msgs, err := LogMessages(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Key != "lib: broker away" || msgs[1].Key != "lib: poison message" {
		t.Fatalf("enumerated %+v", msgs)
	}
	assertProblems(t, CheckLogMessages(fixture, msgs), []string{
		`docs/troubleshooting.md:18: the row for "lib: gone" names no message`,
		`lib/log.go:`, // the poison message has no row
	})
}

func TestDoubledCheckFailsOnSharedRuns(t *testing.T) {
	problems := CheckDoubled("testdata/doubled", []string{"docs/page.md"})
	// Runs of 13, 11 (through a name's code span, not in the quoted
	// message) and 10 words (the link's target is not a word); not the
	// 7-word run, nor what the code blocks, the comment or the figures
	// region say.
	assertProblems(t, problems, []string{
		`lib/doc.go:3: 13 words also in docs/page.md:3: "a message that cannot be decoded goes to the dead letter at once":`,
		`lib/doc.go:9: 11 words also in docs/page.md:9: "retry the publish until the broker answers or the context ends":`,
		`lib/doc.go:9: 10 words also in docs/page.md:24: "the key is hashed into one of the topic's lanes":`,
	})
	if !strings.Contains(problems[0].What, "package doc") || !strings.Contains(problems[0].What, "link") {
		t.Errorf("the problem does not say what to do: %s", problems[0])
	}
}

func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Sagas that wait":                      "sagas-that-wait",
		"The `fxbus` module: across processes": "the-fxbus-module-across-processes",
		"NATS JetStream (natsjs)":              "nats-jetstream-natsjs",
		"[Linked](x.md) heading":               "linked-heading",
	} {
		if got := Slug(strings.ReplaceAll(heading, "`", "")); got != want {
			t.Errorf("Slug(%q) = %q, want %q", heading, got, want)
		}
	}
}

func assertProblems(t *testing.T, got []Problem, prefixes []string) {
	t.Helper()
	if len(got) != len(prefixes) {
		for _, p := range got {
			t.Log(p)
		}
		t.Fatalf("%d problems, want %d", len(got), len(prefixes))
	}
	for i, p := range got {
		if !strings.HasPrefix(p.String(), prefixes[i]) {
			t.Errorf("problem %d:\n  got  %s\n  want %s…", i, p, prefixes[i])
		}
	}
}
