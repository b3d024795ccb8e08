package tiny

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// The yolo7d native model file: a safetensors file (safetensors.go)
// holding a deploy-form Model and its metadata.

// ModelMeta is what a model file says about its model besides the weights.
type ModelMeta struct {
	// InputSize is the square input side the model was made for (0: none).
	InputSize int
	// Provenance records where the weights came from.
	Provenance Provenance
	// Metrics is free-form JSON (evaluation results); nil or empty for none.
	Metrics json.RawMessage
	// FormatVersion is the file's format_version (set by ReadModelFile).
	FormatVersion string
}

// Provenance records the source of a model file's weights.
type Provenance struct {
	Source       string `json:"source,omitempty"`        // source file (path or name)
	SourceSHA256 string `json:"source_sha256,omitempty"` // hex SHA-256 of the source file
	Tool         string `json:"tool,omitempty"`          // program and version that wrote the file
	Time         string `json:"time,omitempty"`          // RFC 3339 time of writing
}

// modelTensors lists m's weights under the ONNX initializer names, in
// ConvShapes order.
func modelTensors(m *Model) []STensor {
	ts := make([]STensor, 0, 2*len(m.Convs))
	for _, c := range m.Convs {
		ts = append(ts,
			STensor{Name: c.ConvShape.Name + ".weight", Shape: []int{c.Out, c.In, c.K, c.K}, Data: c.Weight},
			STensor{Name: c.ConvShape.Name + ".bias", Shape: []int{c.Out}, Data: c.Bias})
	}
	return ts
}

// modelMetadata returns the metadata strings of m's model file.
func modelMetadata(m *Model, meta ModelMeta) (map[string]string, error) {
	if _, err := SpecByName(m.Spec.Name); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	names, err := json.Marshal(m.Names)
	if err != nil {
		return nil, err
	}
	prov, err := json.Marshal(meta.Provenance)
	if err != nil {
		return nil, err
	}
	metrics := "{}"
	if len(bytes.TrimSpace(meta.Metrics)) > 0 {
		if !json.Valid(meta.Metrics) {
			return nil, errors.New("metrics is not valid JSON")
		}
		metrics = string(meta.Metrics)
	}
	return map[string]string{
		"format":         SafetensorsFormat,
		"format_version": SafetensorsFormatVersion,
		"spec":           m.Spec.Name,
		"depth":          strconv.FormatFloat(m.Spec.Depth, 'g', -1, 64),
		"width":          strconv.FormatFloat(m.Spec.Width, 'g', -1, 64),
		"act":            string(m.Act),
		"nc":             strconv.Itoa(m.NC),
		"names":          string(names),
		"input_size":     strconv.Itoa(meta.InputSize),
		"form":           "deploy",
		"provenance":     string(prov),
		"metrics":        metrics,
	}, nil
}

// WriteModel writes m and meta as a yolo7d safetensors model file: the
// deploy-form weights under their ONNX initializer names and the metadata
// strings format ("yolo7d"), format_version, spec (the spec's name, which
// encodes its scaling: see SpecByName), act,
// nc, names (JSON), input_size, form ("deploy"), provenance (JSON), metrics
// (JSON) and content_sha256.
func WriteModel(w io.Writer, m *Model, meta ModelMeta) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("tiny: write model: %w", err)
	}
	md, err := modelMetadata(m, meta)
	if err != nil {
		return fmt.Errorf("tiny: write model: %w", err)
	}
	return WriteSafetensors(w, modelTensors(m), md)
}

// WriteModelFile writes m to path (WriteModel) atomically: a temporary
// file in the same directory is written, fsynced and renamed over path,
// and the directory is fsynced, so a reader never sees a partial model.
func WriteModelFile(path string, m *Model, meta ModelMeta) error {
	if err := WriteFileAtomic(path, func(w io.Writer) error { return WriteModel(w, m, meta) }); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	return nil
}

// WriteFileAtomic writes path through write: temporary file, fsync,
// rename, fsync of the directory.
func WriteFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// ReadModelFile reads a yolo7d safetensors model file (WriteModelFile).
// A file whose tensor bytes do not match content_sha256 is an error.
func ReadModelFile(path string) (*Model, ModelMeta, error) {
	st, err := ReadSafetensorsFile(path)
	if err != nil {
		return nil, ModelMeta{}, err
	}
	m, meta, err := ModelFromSafetensors(st)
	if err != nil {
		return nil, ModelMeta{}, fmt.Errorf("%w (file %s)", err, path)
	}
	return m, meta, nil
}

// ModelFromSafetensors builds the deploy-form model a parsed yolo7d model
// file holds and returns its metadata.
func ModelFromSafetensors(st *Safetensors) (*Model, ModelMeta, error) {
	md := st.Metadata
	fail := func(format string, args ...any) (*Model, ModelMeta, error) {
		return nil, ModelMeta{}, fmt.Errorf("tiny: model file: "+format, args...)
	}
	if md["format"] != SafetensorsFormat {
		return fail("format %q, want %q (not a yolo7d model file)", md["format"], SafetensorsFormat)
	}
	if md["format_version"] != SafetensorsFormatVersion {
		return fail("format_version %q, this build reads %q", md["format_version"], SafetensorsFormatVersion)
	}
	if md["form"] != "deploy" {
		return fail("form %q, want \"deploy\"", md["form"])
	}
	if _, ok := md["content_sha256"]; !ok {
		return fail("no content_sha256")
	}
	spec, err := SpecByName(md["spec"])
	if err != nil {
		return fail("spec: %v", err)
	}
	for key, want := range map[string]float64{"depth": spec.Depth, "width": spec.Width} {
		if v, ok := md[key]; ok {
			if f, err := strconv.ParseFloat(v, 64); err != nil || f != want {
				return fail("%s %q does not match spec %q (%g)", key, v, spec.Name, want)
			}
		}
	}
	act, err := ParseAct(md["act"])
	if err != nil || md["act"] == "" {
		return fail("act %q: want relu or leaky", md["act"])
	}
	nc, err := strconv.Atoi(md["nc"])
	if err != nil || nc < 1 || nc > 100000 {
		return fail("nc %q: want a class count", md["nc"])
	}
	var names []string
	if s := md["names"]; s != "" {
		if err := json.Unmarshal([]byte(s), &names); err != nil {
			return fail("names: %v", err)
		}
	}
	meta := ModelMeta{FormatVersion: md["format_version"]}
	if s := md["input_size"]; s != "" {
		if meta.InputSize, err = strconv.Atoi(s); err != nil || meta.InputSize < 0 || meta.InputSize%32 != 0 {
			return fail("input_size %q: want 0 or a multiple of 32", s)
		}
	}
	if s := md["provenance"]; s != "" {
		if err := json.Unmarshal([]byte(s), &meta.Provenance); err != nil {
			return fail("provenance: %v", err)
		}
	}
	if s := md["metrics"]; s != "" {
		if !json.Valid([]byte(s)) {
			return fail("metrics is not valid JSON")
		}
		meta.Metrics = json.RawMessage(s)
	}
	// Bound what NewModel allocates by the weights the file really holds.
	shapes, err := spec.ConvShapes(3, nc)
	if err != nil {
		return fail("%v", err)
	}
	have, need := 0, 0
	for _, t := range st.Tensors {
		have += len(t.Data)
	}
	for _, c := range shapes {
		wl, ok := boundedProduct(have, c.Out, c.In, c.K, c.K)
		if !ok || c.Out > have {
			return fail("spec conv %s (%dx%dx%dx%d) does not fit the %d stored values", c.Name, c.Out, c.In, c.K, c.K, have)
		}
		if need += wl + c.Out; need > have {
			return fail("spec needs more than the %d stored values", have)
		}
	}
	m, err := NewModel(spec, act, nc)
	if err != nil {
		return fail("%v", err)
	}
	m.Names = names
	want := modelTensors(m)
	if len(st.Tensors) != len(want) {
		return fail("%d tensors, %s with %d classes has %d", len(st.Tensors), spec.Name, nc, len(want))
	}
	for _, w := range want {
		t, ok := st.Tensor(w.Name)
		if !ok {
			return fail("no tensor %q", w.Name)
		}
		if !slices.Equal(t.Shape, w.Shape) {
			return fail("tensor %q has shape %v, want %v", w.Name, t.Shape, w.Shape)
		}
		copy(w.Data, t.Data)
	}
	if err := m.Validate(); err != nil {
		return fail("%v", err)
	}
	return m, meta, nil
}

// boundedProduct multiplies positive factors, reporting false when one is
// not positive or the product exceeds limit (so it never overflows).
func boundedProduct(limit int, factors ...int) (int, bool) {
	p := 1
	for _, f := range factors {
		if f <= 0 || p > limit/f {
			return 0, false
		}
		p *= f
	}
	return p, true
}
