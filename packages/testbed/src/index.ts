export * from "./poll.ts"
export * from "./images.ts"
