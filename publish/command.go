package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Command names: the last level of the topic "<p>/cmd/<name>".
const (
	CmdReload   = "reload"   // reload the configuration and the model
	CmdSnapshot = "snapshot" // publish a snapshot of one camera
	CmdFinetune = "finetune" // fine-tune the model on a dataset
	CmdRollback = "rollback" // go back to the previous model
	CmdCapture  = "capture"  // save camera frames into a dataset folder
)

// MaxCommandSize is the largest command payload accepted.
const MaxCommandSize = 64 << 10

// Limits of the finetune command's fields.
const (
	MaxEpochs = 1000
	MinImg    = 32
	MaxImg    = 1280
	MaxBatch  = 256
	MaxFreeze = 77 // the number of layers of yolov7-tiny
)

// Command is a validated command. Only the fields of its Name are set.
type Command struct {
	Name string // CmdReload, CmdSnapshot, CmdFinetune or CmdRollback
	// ID is the caller's id, echoed in the reply: 1 to 64 characters of
	// [A-Za-z0-9._:-].
	ID string
	// Camera is the camera of a snapshot command (a ValidName).
	Camera string
	// Finetune holds the arguments of a finetune command.
	Finetune FinetuneArgs
	// Capture holds the arguments of a capture command (its camera is
	// Camera).
	Capture CaptureArgs
}

// Limits of the capture command's fields.
const (
	MaxCaptureCount    = 10000
	MaxCaptureInterval = time.Hour
)

// CaptureArgs are the arguments of a capture command: save Count frames of
// the camera, one every Interval, into the dataset folder Dir (inside the
// data directory, checked lexically as FinetuneArgs' paths) as
// images/<Split>/*.jpg, with the running model's detections as YOLO labels
// in labels/<Split>/*.txt when Labels is set (pre-labels to correct).
type CaptureArgs struct {
	Dir      string
	Split    string // "train" or "val"
	Count    int    // 1..MaxCaptureCount
	Interval time.Duration
	Labels   bool
}

// FinetuneArgs are the arguments of a finetune command.
//
// The paths are checked lexically: they stay inside the data directory as
// written, but a symbolic link inside it may still point out. Open them with
// os.OpenInRoot (or an os.Root of the data directory) to be sure.
type FinetuneArgs struct {
	Data   string // the dataset's data.yaml: a clean path inside the data directory
	Base   string // the model to start from, inside the data directory; "" means the current model
	Epochs int    // 1..MaxEpochs; 0 means the configured default
	Img    int    // MinImg..MaxImg, a multiple of 32; 0 means the configured default
	Batch  int    // 1..MaxBatch; 0 means the configured default
	Freeze int    // 0..MaxFreeze layers frozen; -1 means the configured default
	Aux    bool   // train with the auxiliary head (meaningful when AuxSet)
	AuxSet bool   // aux was given; otherwise the configured default applies
	Resume bool   // resume the last interrupted fine-tune
	// Cancel asks to cancel the running fine-tune. It comes alone with the
	// id: a cancel command sets no other field.
	Cancel bool
}

// CommandError is the error of ParseCommand: why a command was refused, and
// which field is at fault.
type CommandError struct {
	Field  string // the JSON field at fault; "" when the payload as a whole is
	Reason string
}

// Error implements error.
func (e *CommandError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Reason)
}

func fieldErr(field, format string, args ...any) error {
	return &CommandError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Wire forms of the commands. Pointers tell absent from zero.
type (
	idCmd struct {
		ID *string `json:"id"`
	}
	snapshotCmd struct {
		ID     *string `json:"id"`
		Camera *string `json:"camera"`
	}
	captureCmd struct {
		ID       *string `json:"id"`
		Camera   *string `json:"camera"`
		Dataset  *string `json:"dataset"`
		Split    *string `json:"split"`
		Count    *int    `json:"count"`
		Interval *string `json:"interval"`
		Labels   *bool   `json:"labels"`
	}
	finetuneCmd struct {
		ID     *string `json:"id"`
		Data   *string `json:"data"`
		Base   *string `json:"base"`
		Epochs *int    `json:"epochs"`
		Img    *int    `json:"img"`
		Batch  *int    `json:"batch"`
		Freeze *int    `json:"freeze"`
		Aux    *bool   `json:"aux"`
		Resume *bool   `json:"resume"`
		Cancel *bool   `json:"cancel"`
	}
)

// ParseCommand validates the payload of the command name (the last level of
// its topic) strictly: a JSON object of at most MaxCommandSize bytes, valid
// UTF-8, nothing after it, no unknown, duplicate or null fields, the right
// types, a valid id, values in range, and paths that stay inside dataDir.
// Paths in the result are joined to dataDir.
//
// On error, the returned Command still carries the Name and the ID when
// they could be read, for the reply; the error is a *CommandError.
func ParseCommand(name string, payload []byte, dataDir string) (Command, error) {
	var cmd Command
	if validChars(name, 64, false) {
		cmd.Name = name
	}
	if len(payload) > MaxCommandSize {
		return cmd, &CommandError{Reason: fmt.Sprintf("payload of %d bytes exceeds the limit of %d", len(payload), MaxCommandSize)}
	}
	if !utf8.Valid(payload) {
		return cmd, &CommandError{Reason: "payload is not valid UTF-8"}
	}
	id, err := checkObject(payload)
	if validID(id) {
		cmd.ID = id
	}
	if err != nil {
		return cmd, err
	}
	switch name {
	case CmdReload, CmdRollback:
		var w idCmd
		if err := decodeStrict(payload, &w); err != nil {
			return cmd, err
		}
		err = checkID(w.ID)
	case CmdSnapshot:
		var w snapshotCmd
		if err := decodeStrict(payload, &w); err != nil {
			return cmd, err
		}
		if err = checkID(w.ID); err == nil {
			switch {
			case w.Camera == nil:
				err = fieldErr("camera", "required")
			case !ValidName(*w.Camera):
				err = fieldErr("camera", "must be 1 to 64 characters of [A-Za-z0-9._-]")
			default:
				cmd.Camera = *w.Camera
			}
		}
	case CmdFinetune:
		var w finetuneCmd
		if err := decodeStrict(payload, &w); err != nil {
			return cmd, err
		}
		if err = checkID(w.ID); err == nil {
			cmd.Finetune, err = w.validate(dataDir)
		}
	case CmdCapture:
		var w captureCmd
		if err := decodeStrict(payload, &w); err != nil {
			return cmd, err
		}
		if err = checkID(w.ID); err == nil {
			cmd.Camera, cmd.Capture, err = w.validate(dataDir)
		}
	default:
		return cmd, &CommandError{Reason: fmt.Sprintf("unknown command %q (want %s, %s, %s, %s or %s)",
			name, CmdReload, CmdSnapshot, CmdFinetune, CmdRollback, CmdCapture)}
	}
	if err != nil {
		return cmd, err
	}
	return cmd, nil
}

func (w *captureCmd) validate(dataDir string) (string, CaptureArgs, error) {
	a := CaptureArgs{Split: "train", Count: 10, Interval: time.Second, Labels: true}
	switch {
	case w.Camera == nil:
		return "", a, fieldErr("camera", "required")
	case !ValidName(*w.Camera):
		return "", a, fieldErr("camera", "must be 1 to 64 characters of [A-Za-z0-9._-]")
	case w.Dataset == nil:
		return "", a, fieldErr("dataset", "required: a folder inside the data directory")
	}
	var err error
	if a.Dir, err = insideDir("dataset", *w.Dataset, dataDir); err != nil {
		return "", a, err
	}
	if w.Split != nil {
		if *w.Split != "train" && *w.Split != "val" {
			return "", a, fieldErr("split", "%q: want train or val", *w.Split)
		}
		a.Split = *w.Split
	}
	if w.Count != nil {
		if *w.Count < 1 || *w.Count > MaxCaptureCount {
			return "", a, fieldErr("count", "%d out of range 1..%d", *w.Count, MaxCaptureCount)
		}
		a.Count = *w.Count
	}
	if w.Interval != nil {
		d, err := time.ParseDuration(*w.Interval)
		if err != nil || d < 0 || d > MaxCaptureInterval {
			return "", a, fieldErr("interval", "%q: want a duration such as \"2s\" in 0s..1h", *w.Interval)
		}
		a.Interval = d
	}
	if w.Labels != nil {
		a.Labels = *w.Labels
	}
	return *w.Camera, a, nil
}

func (w *finetuneCmd) validate(dataDir string) (FinetuneArgs, error) {
	a := FinetuneArgs{Freeze: -1}
	if w.Cancel != nil && *w.Cancel {
		others := []struct {
			field string
			set   bool
		}{
			{"data", w.Data != nil}, {"base", w.Base != nil}, {"epochs", w.Epochs != nil},
			{"img", w.Img != nil}, {"batch", w.Batch != nil}, {"freeze", w.Freeze != nil},
			{"aux", w.Aux != nil}, {"resume", w.Resume != nil},
		}
		for _, o := range others {
			if o.set {
				return a, fieldErr(o.field, "not allowed with \"cancel\": true (a cancel command has only an id)")
			}
		}
		return FinetuneArgs{Cancel: true}, nil
	}
	if w.Data == nil {
		return a, fieldErr("data", "required")
	}
	var err error
	if a.Data, err = insideDir("data", *w.Data, dataDir); err != nil {
		return a, err
	}
	if ext := strings.ToLower(filepath.Ext(a.Data)); ext != ".yaml" && ext != ".yml" {
		return a, fieldErr("data", "must name a .yaml dataset file")
	}
	if w.Base != nil {
		if a.Base, err = insideDir("base", *w.Base, dataDir); err != nil {
			return a, err
		}
	}
	ranges := []struct {
		field    string
		v        *int
		lo, hi   int
		multiple int
		dst      *int
	}{
		{"epochs", w.Epochs, 1, MaxEpochs, 1, &a.Epochs},
		{"img", w.Img, MinImg, MaxImg, 32, &a.Img},
		{"batch", w.Batch, 1, MaxBatch, 1, &a.Batch},
		{"freeze", w.Freeze, 0, MaxFreeze, 1, &a.Freeze},
	}
	for _, r := range ranges {
		if r.v == nil {
			continue
		}
		if *r.v < r.lo || *r.v > r.hi {
			return a, fieldErr(r.field, "%d out of range %d..%d", *r.v, r.lo, r.hi)
		}
		if *r.v%r.multiple != 0 {
			return a, fieldErr(r.field, "%d is not a multiple of %d", *r.v, r.multiple)
		}
		*r.dst = *r.v
	}
	if w.Aux != nil {
		a.Aux, a.AuxSet = *w.Aux, true
	}
	if w.Resume != nil {
		a.Resume = *w.Resume
	}
	return a, nil
}

// insideDir checks that p is a relative path staying inside dir and returns
// it joined to dir.
func insideDir(field, p, dir string) (string, error) {
	switch {
	case dir == "":
		return "", fieldErr(field, "no data directory is configured")
	case p == "":
		return "", fieldErr(field, "empty path")
	case len(p) > 1024:
		return "", fieldErr(field, "path longer than 1024 bytes")
	case strings.ContainsRune(p, 0):
		return "", fieldErr(field, "path contains a NUL byte")
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return "", fieldErr(field, "absolute path refused: give a path relative to the data directory")
	case !filepath.IsLocal(p):
		return "", fieldErr(field, "path escapes the data directory")
	}
	return filepath.Join(dir, p), nil
}

func checkID(id *string) error {
	switch {
	case id == nil:
		return fieldErr("id", "required")
	case !validID(*id):
		return fieldErr("id", "must be 1 to 64 characters of [A-Za-z0-9._:-]")
	}
	return nil
}

func validID(id string) bool { return validChars(id, 64, true) }

// checkObject checks that payload is exactly one JSON object whose keys are
// unique and whose values are not null, and returns its "id" when that is a
// string.
func checkObject(payload []byte) (id string, err error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return "", syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return "", &CommandError{Reason: "payload must be a JSON object"}
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return id, syntaxErr(err)
		}
		key := tok.(string) // the decoder guarantees object keys are strings
		if seen[key] {
			return id, fieldErr(key, "given twice")
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return id, syntaxErr(err)
		}
		if string(raw) == "null" {
			return id, fieldErr(key, "null is not allowed")
		}
		if key == "id" {
			_ = json.Unmarshal(raw, &id)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return id, syntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return id, &CommandError{Reason: "trailing data after the JSON object"}
	}
	return id, nil
}

// decodeStrict decodes payload into v, refusing unknown fields, and turns
// the decoder's errors into CommandErrors naming the field.
func decodeStrict(payload []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fieldErr(te.Field, "wrong type: want %s, got %s", jsonKind(te.Type.String()), te.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fieldErr(strings.Trim(f, `"`), "unknown field")
	}
	return syntaxErr(err)
}

func jsonKind(goType string) string {
	switch goType {
	case "int", "*int":
		return "an integer"
	case "string", "*string":
		return "a string"
	case "bool", "*bool":
		return "a boolean"
	}
	return goType
}

func syntaxErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &CommandError{Reason: "invalid JSON: unexpected end of payload"}
	}
	return &CommandError{Reason: "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
}
