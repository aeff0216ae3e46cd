// Package confdecode lets every module's configuration types read
// durations as a person writes them ("50ms", "1m30s") in JSON and YAML,
// while integers keep meaning nanoseconds, as encoding/json writes a
// time.Duration. A type decodes through [Shadow]:
//
//	func (c *Config) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }
//	func (c *Config) UnmarshalYAML(unmarshal func(any) error) error { return unmarshal(confdecode.Shadow(c)) }
//
// The YAML method has the unmarshal-function form that gopkg.in/yaml.v3,
// its successor go.yaml.in/yaml/v3 and yaml.v2 all call, so no module
// imports a YAML package for it.
package confdecode

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"
)

// Duration is a time.Duration in a configuration file: a duration string
// or a number of nanoseconds.
type Duration time.Duration

// UnmarshalJSON decodes a duration string ("50ms") or nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return err
		}
		return d.parse(s)
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a duration such as \"50ms\" or a number of nanoseconds: %w", err)
	}
	*d = Duration(n)
	return nil
}

// UnmarshalYAML decodes a duration string (50ms) or nanoseconds.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var n int64
	if err := unmarshal(&n); err == nil {
		*d = Duration(n)
		return nil
	}
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration such as 50ms or a number of nanoseconds: %w", err)
	}
	return d.parse(s)
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	shadows      sync.Map // reflect.Type → *shadowType
)

// shadowType is a struct type with one pointer field per decoded field
// of the original, its tags kept; durations point as *Duration.
type shadowType struct {
	typ    reflect.Type
	fields []int // the original's field index of each shadow field
}

// Shadow returns a pointer to a struct whose fields point into v's (v is
// a pointer to a struct), with the same json and yaml tags, its
// time.Duration fields read as Duration. Fields tagged "-" in both are
// left out, as are unexported ones. Decoding into it decodes into v.
func Shadow(v any) any {
	rv := reflect.ValueOf(v).Elem()
	st := shadowOf(rv.Type())
	sv := reflect.New(st.typ).Elem()
	for i, fi := range st.fields {
		p := rv.Field(fi).Addr()
		if sv.Field(i).Type() == reflect.TypeFor[*Duration]() {
			p = p.Convert(reflect.TypeFor[*Duration]())
		}
		sv.Field(i).Set(p)
	}
	return sv.Addr().Interface()
}

func shadowOf(t reflect.Type) *shadowType {
	if s, ok := shadows.Load(t); ok {
		return s.(*shadowType)
	}
	var (
		fields []reflect.StructField
		index  []int
	)
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || (f.Tag.Get("json") == "-" && f.Tag.Get("yaml") == "-") {
			continue
		}
		typ := reflect.PointerTo(f.Type)
		if f.Type == durationType {
			typ = reflect.TypeFor[*Duration]()
		}
		fields = append(fields, reflect.StructField{Name: f.Name, Type: typ, Tag: f.Tag})
		index = append(index, i)
	}
	s, _ := shadows.LoadOrStore(t, &shadowType{typ: reflect.StructOf(fields), fields: index})
	return s.(*shadowType)
}
