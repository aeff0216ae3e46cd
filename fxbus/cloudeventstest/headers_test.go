package cloudeventstest

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// protocol is a broker's protocol binding as the SDK's protocol modules
// (not available here) would write and read it: only the header naming
// is the test's; the attributes' values, the JSON event format and the
// validation are the SDK's own (binding.Write, binding.ToEvent).
type protocol struct {
	prefix      string // "ce-", "ce_", "cloudEvents:"
	contentType string // the datacontenttype header; "": an attribute like the others
	format      string // the structured mode's media type header
	percent     bool   // NATS: values percent-encoded
}

var (
	natsProtocol  = protocol{prefix: "ce-", format: "Content-Type", percent: true}
	kafkaProtocol = protocol{prefix: "ce_", contentType: "content-type", format: "content-type"}
	amqpProtocol  = protocol{prefix: "cloudEvents:", contentType: "content-type", format: "content-type"}
)

// wire is a message as a broker carries it: headers and a body.
type wire struct {
	headers map[string]string
	body    []byte
}

// encode writes e with the SDK, in the structured mode or the binary one.
func (p protocol) encode(e event.Event, structured bool) (wire, error) {
	w := &writer{p: p, out: wire{headers: map[string]string{}}}
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	_, err := binding.Write(ctx, binding.ToMessage(&e), w, w)
	return w.out, err
}

// decode reads a message with the SDK.
func (p protocol) decode(m wire) (*event.Event, error) {
	return binding.ToEvent(context.Background(), reader{p: p, m: m})
}

type writer struct {
	p   protocol
	out wire
}

func (w *writer) Start(context.Context) error { return nil }
func (w *writer) End(context.Context) error   { return nil }

func (w *writer) SetData(r io.Reader) (err error) {
	w.out.body, err = io.ReadAll(r)
	return err
}

func (w *writer) SetAttribute(a spec.Attribute, value any) error {
	if a.Kind() == spec.DataContentType && w.p.contentType != "" {
		s, err := types.Format(value)
		w.out.headers[w.p.contentType] = s
		return err
	}
	return w.SetExtension(a.Name(), value)
}

func (w *writer) SetExtension(name string, value any) error {
	s, err := types.Format(value)
	if w.p.percent {
		s = strings.ReplaceAll(url.PathEscape(s), "%2F", "/")
	}
	w.out.headers[w.p.prefix+name] = s
	return err
}

func (w *writer) SetStructuredEvent(_ context.Context, f format.Format, r io.Reader) (err error) {
	w.out.headers[w.p.format] = f.MediaType()
	w.out.body, err = io.ReadAll(r)
	return err
}

type reader struct {
	p protocol
	m wire
}

func (r reader) header(name string) string {
	for k, v := range r.m.headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func (r reader) ReadEncoding() binding.Encoding {
	if strings.HasPrefix(strings.ToLower(r.header(r.p.format)), "application/cloudevents") {
		return binding.EncodingStructured
	}
	if r.header(r.p.prefix+"specversion") != "" {
		return binding.EncodingBinary
	}
	return binding.EncodingUnknown
}

func (r reader) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	f := format.Lookup(r.header(r.p.format))
	if f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, bytes.NewReader(r.m.body))
}

func (r reader) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	specs := spec.WithPrefix(r.p.prefix)
	version := specs.Version(r.header(r.p.prefix + "specversion"))
	if version == nil {
		return binding.ErrNotBinary
	}
	for k, v := range r.m.headers {
		lk := strings.ToLower(k)
		if lk == strings.ToLower(r.p.contentType) {
			if err := w.SetAttribute(version.AttributeFromKind(spec.DataContentType), v); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(lk, strings.ToLower(r.p.prefix)) {
			continue
		}
		if r.p.percent {
			var err error
			if v, err = url.PathUnescape(v); err != nil {
				return err
			}
		}
		var err error
		if a := version.Attribute(lk); a != nil {
			err = w.SetAttribute(a, v)
		} else {
			err = w.SetExtension(lk[len(r.p.prefix):], v)
		}
		if err != nil {
			return err
		}
	}
	if len(r.m.body) > 0 {
		return w.SetData(bytes.NewReader(r.m.body))
	}
	return nil
}

func (reader) Finish(error) error { return nil }

func (r reader) value(name string) (string, bool) {
	for k, v := range r.m.headers {
		if strings.EqualFold(k, name) {
			if r.p.percent {
				if d, err := url.PathUnescape(v); err == nil {
					v = d
				}
			}
			return v, true
		}
	}
	return "", false
}

func (r reader) GetAttribute(kind spec.Kind) (spec.Attribute, any) {
	version := spec.WithPrefix(r.p.prefix).Version(r.header(r.p.prefix + "specversion"))
	if version == nil {
		return nil, nil
	}
	a := version.AttributeFromKind(kind)
	if a == nil {
		return nil, nil
	}
	name := a.PrefixedName()
	if kind == spec.DataContentType && r.p.contentType != "" {
		name = r.p.contentType
	}
	if v, ok := r.value(name); ok {
		return a, v
	}
	return a, nil
}

func (r reader) GetExtension(name string) any {
	if v, ok := r.value(r.p.prefix + name); ok {
		return v
	}
	return nil
}
