package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeFile writes data to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wholeModel checks that path holds exactly one of the wanted contents (a
// complete file, never a mix or a truncation) and returns which.
func wholeModel(t *testing.T, path string, want ...[]byte) int {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the model path holds no file: %v", err)
	}
	for i, w := range want {
		if bytes.Equal(got, w) {
			return i
		}
	}
	t.Fatalf("%s holds %d bytes that are none of the complete models", path, len(got))
	return -1
}

// TestPromoteFilesLeavesAWholeModelAfterEveryStep stops a promotion after
// each of its steps, as a kill -9 would, and checks that the model path
// holds a complete model (the old one before the candidate's rename, the
// new one after), that <model>.prev keeps the old one once written, and
// that a promotion run again afterwards completes.
func TestPromoteFilesLeavesAWholeModelAfterEveryStep(t *testing.T) {
	old := bytes.Repeat([]byte("old model "), 5000)
	cand := bytes.Repeat([]byte("candidate "), 7000)
	tests := []struct {
		stop      int
		wantModel int // 0 old, 1 new
		wantPrev  bool
	}{
		{promoteStepPrevTemp, 0, false},
		{promoteStepPrev, 0, true},
		{promoteStepCandidate, 1, true},
		{promoteStepSyncDir, 1, true},
		{0, 1, true}, // no interruption
	}
	for _, tt := range tests {
		t.Run("stop after step "+string(rune('0'+tt.stop)), func(t *testing.T) {
			dir := t.TempDir()
			model := writeFile(t, dir, "m.onnx", old)
			c := writeFile(t, dir, "m.candidate-x.onnx", cand)
			err := promoteFiles(model, c, func(step int) error {
				if step == tt.stop {
					return errStepStop
				}
				return nil
			})
			if tt.stop != 0 && !errors.Is(err, errStepStop) {
				t.Fatalf("promoteFiles = %v, want the injected stop", err)
			}
			if tt.stop == 0 && err != nil {
				t.Fatal(err)
			}
			if got := wholeModel(t, model, old, cand); got != tt.wantModel {
				t.Fatalf("model holds model %d, want %d", got, tt.wantModel)
			}
			if tt.wantPrev {
				wholeModel(t, prevPath(model), old)
			}
			if tt.wantModel == 0 {
				// Recovery: the next promotion (the candidate is still
				// there) completes over the leftovers.
				if err := promoteFiles(model, c, nil); err != nil {
					t.Fatalf("promotion after an interrupted one: %v", err)
				}
				wholeModel(t, model, cand)
				wholeModel(t, prevPath(model), old)
			}
		})
	}
}

// TestSwapPrevFilesLeavesAWholeModelAfterEveryStep does the same for the
// rollback's exchange of the model and <model>.prev, and checks that two
// rollbacks toggle back.
func TestRollbackSwapLeavesAWholeModelAfterEveryStep(t *testing.T) {
	cur := bytes.Repeat([]byte("current "), 6000)
	prev := bytes.Repeat([]byte("previous "), 4000)
	tests := []struct {
		stop      int
		wantModel int // 0 current, 1 previous
	}{
		{swapStepTemp, 0},
		{swapStepPrev, 1},
		{swapStepTempPrev, 1},
		{swapStepSyncDir, 1},
	}
	for _, tt := range tests {
		t.Run("stop after step "+string(rune('0'+tt.stop)), func(t *testing.T) {
			dir := t.TempDir()
			model := writeFile(t, dir, "m.onnx", cur)
			writeFile(t, dir, "m.onnx.prev", prev)
			err := swapPrevFiles(model, func(step int) error {
				if step == tt.stop {
					return errStepStop
				}
				return nil
			})
			if !errors.Is(err, errStepStop) {
				t.Fatalf("swapPrevFiles = %v, want the injected stop", err)
			}
			if got := wholeModel(t, model, cur, prev); got != tt.wantModel {
				t.Fatalf("model holds model %d, want %d", got, tt.wantModel)
			}
			// Whatever happened, the replaced model survives somewhere whole.
			if tt.wantModel == 1 {
				for _, p := range []string{prevPath(model), model + ".swap.tmp"} {
					if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, cur) {
						return
					}
				}
				t.Fatal("the replaced model is lost")
			}
		})
	}

	t.Run("toggles", func(t *testing.T) {
		dir := t.TempDir()
		model := writeFile(t, dir, "m.onnx", cur)
		writeFile(t, dir, "m.onnx.prev", prev)
		for i, want := range [][2][]byte{{prev, cur}, {cur, prev}, {prev, cur}} {
			if err := swapPrevFiles(model, nil); err != nil {
				t.Fatalf("swap %d: %v", i+1, err)
			}
			wholeModel(t, model, want[0])
			wholeModel(t, prevPath(model), want[1])
		}
	})

	t.Run("no previous model", func(t *testing.T) {
		dir := t.TempDir()
		model := writeFile(t, dir, "m.onnx", cur)
		if err := swapPrevFiles(model, nil); err == nil {
			t.Fatal("swap without a .prev succeeded")
		}
		wholeModel(t, model, cur)
	})
}

// TestPromoteFilesRefusesACandidateElsewhere: the rename must stay inside
// one directory to be atomic.
func TestPromoteFilesRefusesACandidateElsewhere(t *testing.T) {
	dir := t.TempDir()
	model := writeFile(t, dir, "m.onnx", []byte("old"))
	other := t.TempDir()
	c := writeFile(t, other, "c.onnx", []byte("new"))
	if err := promoteFiles(model, c, nil); err == nil {
		t.Fatal("promotion of a candidate in another directory succeeded")
	}
	wholeModel(t, model, []byte("old"))
	if _, err := os.Stat(prevPath(model)); !os.IsNotExist(err) {
		t.Fatalf(".prev written for a refused promotion: %v", err)
	}
}

// TestRestoreFilesUndoesAPromotion: the promoted file goes back to the
// candidate's name, the previous model back to the model path.
func TestPromoteRestoreFilesUndoesAPromotion(t *testing.T) {
	dir := t.TempDir()
	old, cand := []byte("old model"), []byte("bad candidate")
	model := writeFile(t, dir, "m.onnx", old)
	c := writeFile(t, dir, "m.candidate-x.onnx", cand)
	if err := promoteFiles(model, c, nil); err != nil {
		t.Fatal(err)
	}
	if err := restoreFiles(model, c); err != nil {
		t.Fatal(err)
	}
	wholeModel(t, model, old)
	wholeModel(t, c, cand)
}
