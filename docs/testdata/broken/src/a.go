package src

import "fmt"

func greet() {
	// snippet:greet
	fmt.Println("hello")
	// end snippet
}

func ExampleGreet() {
	greet()
	// Output: hello
}
