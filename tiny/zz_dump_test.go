package tiny

import (
	"fmt"
	"os"
	"testing"
)

func TestDumpGolden(t *testing.T) {
	p := os.Getenv("DUMP")
	if p == "" {
		t.Skip()
	}
	m, err := ReadONNXFile(p)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ir %d producer %q %q opset %d graph %q\n", m.IRVersion, m.ProducerName, m.ProducerVersion, m.Opset, m.GraphName)
	for _, v := range m.Inputs {
		fmt.Printf("input %+v\n", v)
	}
	for _, v := range m.Outputs {
		fmt.Printf("output %+v\n", v)
	}
	for _, n := range m.Nodes {
		fmt.Printf("%s %s in=%v out=%v", n.OpType, n.Name, n.Inputs, n.Outputs)
		for _, a := range n.Attrs {
			fmt.Printf(" %s(t%d)=", a.Name, a.Type)
			switch a.Type {
			case 1:
				fmt.Print(a.F)
			case 2:
				fmt.Print(a.I)
			case 3:
				fmt.Printf("%q", a.S)
			case 4:
				fmt.Printf("T{%d %v %v %v}", a.T.DataType, a.T.Dims, a.T.Float, a.T.Int64)
			case 6:
				fmt.Print(a.Floats)
			case 7:
				fmt.Print(a.Ints)
			}
		}
		fmt.Println()
	}
	for _, in := range m.Initializers {
		fmt.Printf("init %s %d %v\n", in.Name, in.DataType, in.Dims)
	}
}
