export * from "./poll.ts"
