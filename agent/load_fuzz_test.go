package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, and a
// configuration it accepts must print (Effective) and parse again.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "config", "*.toml"))
	seeds = append(seeds, filepath.Join("..", "config.toml"))
	for _, p := range seeds {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("[[camera]]\nname = 'a'\nuri = \"\"\"\nv4l2://0\"\"\"\n[camera.x]\n"))
	f.Add([]byte("a = [ { b = '''\n''' }, \"\\\"\" ]\n[[x.y]]\n[x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// BurntSushi/toml takes time quadratic in the depth of dotted keys
		// and inline tables (a 12 KB key with 6000 parts takes 1.5 s);
		// bigger inputs only stall the fuzzer.
		if len(data) > 4096 {
			return
		}
		cfg, err := Parse(data, filepath.Join("testdata", "config", "fuzz.toml"))
		if err != nil {
			return
		}
		out, err := cfg.Effective()
		if err != nil {
			t.Fatalf("Effective: %v", err)
		}
		if _, err := Parse(out, filepath.Join("testdata", "config", "fuzz.toml")); err != nil {
			t.Fatalf("the effective configuration does not parse: %v\n%s", err, out)
		}
	})
}
