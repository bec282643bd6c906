module gmp/benches/gobench

// 1.22: `for i := range n` over an int. Standard library only, so no go.sum and no network.
go 1.22
