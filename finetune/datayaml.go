package finetune

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DataConfig is a dataset description read from a data.yaml file in the
// format of the official YOLOv7 and the Ultralytics tools:
//
//	path: ../datasets/shapes   # optional root (Ultralytics); relative to the yaml
//	train: images/train        # a folder, a .txt list of image paths, or a list of those
//	val: [images/val, extra.txt]
//	test: images/test          # optional
//	nc: 3                      # optional when names is given; must equal len(names)
//	names: [circle, square, triangle]   # or a map {0: circle, 1: square, 2: triangle}
//
// Relative paths are resolved against the root: the `path:` folder when
// given (itself relative to the yaml's folder), else the yaml's folder.
// Other keys (download, ...) are ignored.
type DataConfig struct {
	File  string   // the data.yaml file
	Root  string   // the folder relative split paths were resolved against
	Train []string // sources of the train split: folders, list files or images
	Val   []string // sources of the val split
	Test  []string // sources of the test split (may be empty)
	NC    int      // number of classes
	Names []string // class names, indexed by class id
}

// maxDataYAMLBytes bounds the size of a data.yaml file.
const maxDataYAMLBytes = 4 << 20

// LoadDataYAML reads and checks a data.yaml file. Errors name the file, the
// line and the field.
func LoadDataYAML(path string) (*DataConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dataset description: %w", err)
	}
	if len(data) > maxDataYAMLBytes {
		return nil, fmt.Errorf("%s: %d bytes, larger than %d", path, len(data), maxDataYAMLBytes)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ParseDataYAML(abs, data)
}

// ParseDataYAML parses the content of a data.yaml file; file names it in
// errors and its folder is where relative paths start. It never panics.
func ParseDataYAML(file string, data []byte) (*DataConfig, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty document, want a mapping with train, val, nc and names", file)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the document is a %s, want a mapping with train, val, nc and names", file, root.Line, nodeKind(root))
	}
	fieldErr := func(n *yaml.Node, field, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s: %s", file, n.Line, field, fmt.Sprintf(format, args...))
	}
	cfg := &DataConfig{File: file, Root: filepath.Dir(file)}
	fields := map[string]*yaml.Node{}
	keys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s:%d: a mapping key is a %s, want a name", file, k.Line, nodeKind(k))
		}
		if prev, dup := keys[k.Value]; dup {
			return nil, fieldErr(k, k.Value, "defined twice (first on line %d)", prev.Line)
		}
		keys[k.Value] = k
		fields[k.Value] = v
	}

	if v, ok := fields["path"]; ok && !isNull(v) {
		if v.Kind != yaml.ScalarNode || v.Value == "" {
			return nil, fieldErr(v, "path", "want a folder name, got a %s", nodeKind(v))
		}
		p := v.Value
		if !filepath.IsAbs(p) {
			p = filepath.Join(cfg.Root, p)
		}
		cfg.Root = filepath.Clean(p)
	}
	for _, sp := range []struct {
		name string
		dst  *[]string
	}{{"train", &cfg.Train}, {"val", &cfg.Val}, {"test", &cfg.Test}} {
		v, ok := fields[sp.name]
		if !ok || isNull(v) {
			continue
		}
		var list []*yaml.Node
		switch v.Kind {
		case yaml.ScalarNode:
			list = []*yaml.Node{v}
		case yaml.SequenceNode:
			list = v.Content
			if len(list) == 0 {
				return nil, fieldErr(v, sp.name, "empty list")
			}
		default:
			return nil, fieldErr(v, sp.name, "want a path or a list of paths, got a %s", nodeKind(v))
		}
		for _, e := range list {
			if e.Kind != yaml.ScalarNode || e.Value == "" || isNull(e) {
				return nil, fieldErr(e, sp.name, "want a path, got a %s", nodeKind(e))
			}
			p := e.Value
			if !filepath.IsAbs(p) {
				p = filepath.Join(cfg.Root, p)
			}
			*sp.dst = append(*sp.dst, filepath.Clean(p))
		}
	}
	if cfg.Train == nil && cfg.Val == nil {
		return nil, fmt.Errorf("%s: neither train nor val is given", file)
	}

	nc := -1
	if v, ok := fields["nc"]; ok && !isNull(v) {
		n, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || err != nil {
			return nil, fieldErr(v, "nc", "%q is not an integer", labelTrunc(v.Value, 20))
		}
		if n <= 0 || n > 100000 {
			return nil, fieldErr(v, "nc", "%d classes, want 1 to 100000", n)
		}
		nc = n
	}
	if v, ok := fields["names"]; ok && !isNull(v) {
		names, err := parseNames(v, fieldErr)
		if err != nil {
			return nil, err
		}
		if nc >= 0 && nc != len(names) {
			return nil, fieldErr(v, "names", "%d names but nc is %d (line %d)", len(names), nc, fields["nc"].Line)
		}
		cfg.Names = names
	} else {
		if nc < 0 {
			return nil, fmt.Errorf("%s: names: missing (and no nc)", file)
		}
		// Ultralytics names the classes by their ids when names is absent.
		for i := range nc {
			cfg.Names = append(cfg.Names, "class"+strconv.Itoa(i))
		}
	}
	cfg.NC = len(cfg.Names)
	return cfg, nil
}

// parseNames reads names as a list, or as a map from the class ids 0..n-1
// to names.
func parseNames(v *yaml.Node, fieldErr func(*yaml.Node, string, string, ...any) error) ([]string, error) {
	const maxNames = 100000
	var names []string
	switch v.Kind {
	case yaml.SequenceNode:
		if len(v.Content) > maxNames {
			return nil, fieldErr(v, "names", "%d names, more than %d", len(v.Content), maxNames)
		}
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, fieldErr(e, "names", "a name is a %s, want a string", nodeKind(e))
			}
			names = append(names, e.Value)
		}
	case yaml.MappingNode:
		n := len(v.Content) / 2
		if n > maxNames {
			return nil, fieldErr(v, "names", "%d names, more than %d", n, maxNames)
		}
		names = make([]string, n)
		set := make([]bool, n)
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, e := v.Content[i], v.Content[i+1]
			id, err := strconv.Atoi(k.Value)
			if k.Kind != yaml.ScalarNode || err != nil {
				return nil, fieldErr(k, "names", "key %q is not a class id", labelTrunc(k.Value, 20))
			}
			if id < 0 || id >= n {
				return nil, fieldErr(k, "names", "class id %d outside 0..%d (ids must be 0..n-1)", id, n-1)
			}
			if set[id] {
				return nil, fieldErr(k, "names", "class id %d given twice", id)
			}
			if e.Kind != yaml.ScalarNode {
				return nil, fieldErr(e, "names", "name of class %d is a %s, want a string", id, nodeKind(e))
			}
			names[id], set[id] = e.Value, true
		}
	default:
		return nil, fieldErr(v, "names", "want a list or a map {id: name}, got a %s", nodeKind(v))
	}
	if len(names) == 0 {
		return nil, fieldErr(v, "names", "no names")
	}
	return names, nil
}

// isNull reports an explicit YAML null (`~`, `null` or nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// nodeKind names a node's kind for messages.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "scalar"
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "node of kind " + strconv.Itoa(int(n.Kind))
}

// splitSources returns the sources of a split by name.
func (c *DataConfig) splitSources(split string) ([]string, error) {
	switch strings.ToLower(split) {
	case "train":
		return c.Train, nil
	case "val":
		return c.Val, nil
	case "test":
		return c.Test, nil
	}
	return nil, fmt.Errorf("unknown split %q, want train, val or test", split)
}
