package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// asyncAPI prints a service's AsyncAPI 3.0 document, which only the
// service can make (its routes and subscriptions are in its code): from
// its console's asyncapi.json (fxconsole.WithContract). The document is
// checked to be an AsyncAPI 3 document before it is printed, indented.
// Headers the console's authorization wants come from FXCQRS_HEADER
// ("Name: value").
func asyncAPI(args []string, out io.Writer) error {
	if len(args) != 1 {
		return errors.New("asyncapi URL: the console's asyncapi.json, such as https://billing.internal/ops/asyncapi.json")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("asyncapi: %w", err)
	}
	if h := os.Getenv("FXCQRS_HEADER"); h != "" {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return errors.New("asyncapi: FXCQRS_HEADER is \"Name: value\"")
		}
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asyncapi: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("asyncapi: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("asyncapi: %s answered %s", args[0], resp.Status)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("asyncapi: %s is no JSON document: %w", args[0], err)
	}
	if v, _ := doc["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		return fmt.Errorf("asyncapi: %s is no AsyncAPI 3 document (asyncapi: %q)", args[0], v)
	}
	indented, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", indented)
	return err
}
