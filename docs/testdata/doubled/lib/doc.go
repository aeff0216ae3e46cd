// Package lib says some things its page says too.
//
// A message that cannot be decoded goes to the dead letter at once.
// Seven words are not a run worth reporting here.
//
//	// Code in a package doc is not prose:
//	fmt.Println("whatever the codec, a message that cannot be decoded goes")
//
// Retry the publish until the broker answers or the context ends. The
// key is hashed into one of the topic's lanes, so that a key's messages
// keep their order.
package lib
