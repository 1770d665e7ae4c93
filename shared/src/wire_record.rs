//! `wire_records!`: the record payloads, each declared once as a kind
//! number and a field list, from which the enum, its encoder, its decoder
//! and its borrowed/owned conversions are generated, so the field lists
//! cannot drift apart.

/// Defines a `pub` enum generic over its string type `S`, one struct
/// variant per record kind:
///
/// ```text
/// wire_records! {
///     /// Docs.
///     pub enum Body<S> {
///         /// Docs.
///         Online = 1 { apic_id: ApicId, },
///         /// Docs.
///         Named = 2 { name: S, value: u64, },
///     }
/// }
/// ```
///
/// Fields are encoded in declaration order with [`crate::wire::Wire`]; a
/// field's type is one identifier, and `S` fields are the strings (`&str` when
/// decoded in place, a `String` in the host's owned copies). Generates:
/// - `kind()`: the variant's kind number;
/// - `map_str(f)`: the same record with every string converted by `f`;
/// - `as_str_ref()`: a borrowed `Body<&str>` view of any `Body<S: AsRef<str>>`;
/// - for `Body<&str>`: `put_fields` (encode the payload) and `get_fields`
///   (decode the payload of a kind; unknown kinds and bad fields are
///   [`crate::record::DecodeError`]s naming the field).
macro_rules! wire_records {
    (@map $f:ident S $x:ident) => { $f($x) };
    (@map $f:ident $t:ident $x:ident) => { $x };
    (@borrow S $x:ident) => { AsRef::<str>::as_ref($x) };
    (@borrow $t:ident $x:ident) => { *$x };

    (
        $(#[$m:meta])*
        pub enum $Body:ident<S> {
            $(
                $(#[$vm:meta])*
                $V:ident = $kind:literal {
                    $( $(#[$fm:meta])* $field:ident: $t:ident, )*
                },
            )*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $Body<S> {
            $(
                $(#[$vm])*
                $V { $( $(#[$fm])* $field: $t, )* },
            )*
        }

        impl<S> $Body<S> {
            /// The record kind number (header byte 2).
            pub const fn kind(&self) -> u8 {
                match self {
                    $( $Body::$V { .. } => $kind, )*
                }
            }

            /// The same record with every string converted by `f` (the
            /// host keeps owned copies: `body.map_str(String::from)`).
            pub fn map_str<T>(self, mut f: impl FnMut(S) -> T) -> $Body<T> {
                match self {
                    $(
                        $Body::$V { $($field,)* } => $Body::$V {
                            $( $field: wire_records!(@map f $t $field), )*
                        },
                    )*
                }
            }

            /// A borrowed view: the same record with `&str` strings.
            pub fn as_str_ref(&self) -> $Body<&str>
            where
                S: AsRef<str>,
            {
                match self {
                    $(
                        $Body::$V { $($field,)* } => $Body::$V {
                            $( $field: wire_records!(@borrow $t $field), )*
                        },
                    )*
                }
            }
        }

        impl<'a> $Body<&'a str> {
            /// Appends the payload's fields.
            fn put_fields(&self, w: &mut $crate::wire::Writer<'_>) {
                match self {
                    $( $Body::$V { $($field,)* } => { $( w.put($field); )* } )*
                }
            }

            /// Reads the payload of a record of kind `kind`.
            fn get_fields(
                kind: u8,
                r: &mut $crate::wire::Reader<'a>,
            ) -> Result<Self, $crate::record::DecodeError> {
                use $crate::record::DecodeError;
                Ok(match kind {
                    $(
                        $kind => $Body::$V {
                            $(
                                $field: r
                                    .get()
                                    .map_err(|e| DecodeError::field(stringify!($field), e))?,
                            )*
                        },
                    )*
                    other => return Err(DecodeError::UnknownKind(other)),
                })
            }
        }
    };
}

/// Defines a fixed-layout wire struct from one field list: the `pub`
/// struct itself and its field-by-field encoder and decoder over
/// [`crate::wire`], in declaration order, so that the struct, its encoding
/// and its decoding cannot drift apart:
///
/// ```text
/// wire_struct! {
///     /// Docs.
///     pub struct Header {
///         /// Docs.
///         pub case: Case,
///         /// Docs.
///         pub count: u32,
///     }
/// }
/// ```
///
/// Generates `put_fields` (append every field) and `get_fields` (read
/// every field; the error names the field that could not be read).
macro_rules! wire_struct {
    (
        $(#[$m:meta])*
        pub struct $Name:ident {
            $( $(#[$fm:meta])* pub $field:ident: $t:ty, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $Name {
            $( $(#[$fm])* pub $field: $t, )*
        }

        impl $Name {
            /// Appends every field, in declaration order.
            fn put_fields(&self, w: &mut $crate::wire::Writer<'_>) {
                $( w.put(&self.$field); )*
            }

            /// Reads every field, in declaration order; an error names the
            /// field that could not be read.
            fn get_fields(
                r: &mut $crate::wire::Reader<'_>,
            ) -> Result<Self, (&'static str, $crate::wire::WireError)> {
                Ok($Name {
                    $( $field: r.get().map_err(|e| (stringify!($field), e))?, )*
                })
            }
        }
    };
}
