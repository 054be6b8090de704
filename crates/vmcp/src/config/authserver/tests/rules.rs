//! Each validation rule of the authorization server file, with its exact located message.
